// The tokenizer (runtime/tokenizer/): token ids of awkward strings against
// the independent Python reference (python/ternd/tokenizer.py: the regex
// module and a plain merge loop) on vocabularies the reference trains on a
// corpus made on this machine (bpe.gguf: llama-3 layout, pre "llama-bpe";
// bpe_gpt2.gguf: the same with pre "gpt-2"; spm.gguf: SentencePiece BPE),
// round trips, special tokens, streaming detokenization, and the errors
// for malformed tokenizer data.
//
// The vocabularies are written by the ctest fixture tokenizer_fixtures
// (or by the first test that misses them when run by hand).
#include "runtime/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "base/file.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/tokenizer/gguf_tokenizer.h"
#include "tests/support/test_env.h"

namespace ternd::tokenizer {
namespace {

using ternd::testing::RunCommand;
using ternd::testing::TempDir;

const std::string kFixtures = TOKENIZER_FIXTURE_DIR;

std::string Python() {
  return std::string(PYTHON_PATH) + " " + TOKENIZER_PY_PATH;
}

void EnsureFixtures() {
  if (ReadFile(kFixtures + "/stamp").ok()) return;  // written last
  const auto r = RunCommand(Python() + " fixtures --out " + kFixtures);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

std::unique_ptr<Tokenizer> Load(const std::string& name) {
  EnsureFixtures();
  Result<gguf::GgufFile> f = gguf::GgufFile::Open(kFixtures + "/" + name);
  EXPECT_TRUE(f.ok()) << f.status().message();
  if (!f.ok()) return nullptr;
  Result<TokenizerData> d = TokenizerDataFromGguf(*f);
  EXPECT_TRUE(d.ok()) << d.status().message();
  if (!d.ok()) return nullptr;
  auto t = Tokenizer::Create(*d);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? std::move(*t) : nullptr;
}

// Awkward strings: scripts, combining marks, numbers of 1 to 10 digits,
// whitespace runs, emoji (ZWJ sequences), code, contractions, special
// token texts, and invalid UTF-8.
const std::vector<std::string>& Cases() {
  static const auto* cases = new std::vector<std::string>{
      "",
      "Hello world",
      "Hello, World! How are you?",
      " leading space",
      "trailing space ",
      "   three leading spaces",
      "multiple   spaces   between  words",
      "tabs\tand\t\ttabs",
      "new\nline\n\nand\r\nCRLF\r\n",
      "\n\n\n",
      "   \n  \n\t ",
      " \n",
      "word\n\n  next",
      "it's I'm you're we've they'll she'd don't",
      "IT'S I'M YOU'RE WE'VE THEY'LL SHE'D DON'T",
      "It'S i'M yOu'Re wE'vE tHeY'lL sHe'D",
      "'s 't 're 've 'm 'll 'd ''s",
      "0 1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890",
      "1234567890",
      "x12345y 3.14159 -42 1e10 0x1F 1,000,000",
      "\xD9\xA3\xD9\xA4\xD9\xA5 \xC2\xB2\xC2\xB3 \xE2\x85\xAB numbers of "
      "other scripts",
      "\xC3\xBC"
      "ber sch\xC3\xB6n gr\xC3\xB6\xC3\x9F"
      "er Stra\xC3\x9F"
      "e",
      "d\xC3\xA9j\xC3\xA0 vu, gar\xC3\xA7on, no\xC3\xABl",
      "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 \xD0\xBC\xD0\xB8\xD1"
      "\x80, \xD0\x9C\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0",
      "\xCE\xB3\xCE\xB5\xCE\xB9\xCE\xAC \xCF\x83\xCE\xBF\xCF\x85 "
      "\xCE\xBA\xCF\x8C\xCF\x83\xCE\xBC\xCE\xB5",
      "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xEF\xBC"
      "\x81\xE4\xBB\x8A\xE5\xA4\xA9\xE5\xA4\xA9\xE6\xB0\x94\xE3\x80\x82",
      "\xE3\x81\x93\xE3\x82\x93\xE3\x81\xAB\xE3\x81\xA1\xE3\x81\xAF\xE4\xB8"
      "\x96\xE7\x95\x8C\xE3\x80\x81\xE3\x82\xAB\xE3\x82\xBF\xE3\x82\xAB\xE3"
      "\x83\x8A",
      "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94 \xEC\x84"
      "\xB8\xEA\xB3\x84",
      "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD8\xA8\xD8\xA7\xD9\x84\xD8"
      "\xB9\xD8\xA7\xD9\x84\xD9\x85",
      "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5"
      "\x87 \xE0\xA4\xA6\xE0\xA5\x81\xE0\xA4\xA8\xE0\xA4\xBF\xE0\xA4\xAF\xE0"
      "\xA4\xBE",
      // e + COMBINING ACUTE, a + COMBINING DIAERESIS, stacked marks
      "e\xCC\x81 a\xCC\x88 n\xCC\x83o\xCC\x88\xCC\x81 \xCC\x81 lone mark",
      "\xF0\x9F\x98\x80\xF0\x9F\x8E\x89\xF0\x9F\x91\x8D emoji \xF0\x9F\x9A\x80",
      // family (ZWJ), rainbow flag (VS16 + ZWJ), thumbs up + skin tone,
      // regional indicators
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91"
      "\xA7\xE2\x80\x8D\xF0\x9F\x91\xA6 family, \xF0\x9F\x8F\xB3\xEF\xB8\x8F"
      "\xE2\x80\x8D\xF0\x9F\x8C\x88 flag, \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD "
      "skin, \xF0\x9F\x87\xA9\xF0\x9F\x87\xAA",
      "def f(x):\n    return x * 2\n",
      "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
      "if (a != b && c <= d) { return -1; } // end",
      "<html><body class=\"main\">text</body></html>",
      "x = {'key': [1, 2, 3], \"other\": None}",
      "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
      "!!!??? ... ---- ==== ****",
      // NBSP, EM SPACE, IDEOGRAPHIC SPACE, NEL, LINE SEPARATOR
      "a\xC2\xA0"
      "b\xE2\x80\x83"
      "c\xE3\x80\x80"
      "d\xC2\x85"
      "e\xE2\x80\xA8"
      "f",
      // ZERO WIDTH SPACE, ZWJ, BOM, MONGOLIAN VOWEL SEPARATOR
      "zero\xE2\x80\x8Bwidth\xE2\x80\x8Djoiner\xEF\xBB\xBF"
      "bom \xE1\xA0\x8E mvs",
      "control \x01\x02\x7F chars \x1C\x1D\x1E\x1F",
      std::string("nul\0byte", 8),
      "<|begin_of_text|>Hello<|eot_id|>",
      "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
      "text with <|eot_id|> inside and <|end_of_text|>",
      "<|eot_id|><|eot_id|> <|reserved_special_token_10|>x",
      "[[ternd-user]] user-defined [[ternd-user]]",
      "<s>spm bos</s> and <unk> text",
      " zzzqqqxxyyz",
      "zzzqqqxxyyz zzzqqqxxyyz",
      std::string(300, 'a'),
      std::string(50, ' ') + "x",
      std::string(1000, 'b') + " " + std::string(17, '7'),
      // Invalid UTF-8.
      "\xFF invalid byte",
      "\x80\x80 stray continuation",
      "truncated \xE2\x82",
      "overlong \xC0\xAF and surrogate \xED\xA0\x80",
      "\xF0\x9F\x98 truncated emoji then text",
      "beyond \xF4\x90\x80\x80 U+10FFFF",
  };
  return *cases;
}

bool ValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const int n = Utf8SequenceLength(p + i, s.size() - i);
    if (n <= 0) return false;
    i += n;
  }
  return true;
}

std::string Escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    }
  }
  return "\"" + out + "\"";
}

std::string Ids(const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) out += (out.empty() ? "" : " ") + std::to_string(id);
  return "[" + out + "]";
}

// The Python reference's ids for every case.
std::vector<std::vector<int32_t>> Reference(
    const std::string& vocab, bool parse_special, bool add_bos,
    const std::vector<std::string>& cases = Cases()) {
  TempDir dir;
  std::string hex;
  for (const std::string& c : cases) {
    for (unsigned char b : c) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%02x", b);
      hex += buf;
    }
    hex += "\n";
  }
  EXPECT_TRUE(
      WriteFileAtomically(
          dir / "in.hex",
          std::span(reinterpret_cast<const uint8_t*>(hex.data()), hex.size()))
          .ok());
  const auto r = RunCommand(Python() + " encode --vocab " + kFixtures + "/" +
                            vocab + " --parse-special " +
                            (parse_special ? "1" : "0") + " --add-bos " +
                            (add_bos ? "1" : "0") + " < " + (dir / "in.hex"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::vector<int32_t>> out;
  size_t pos = 0;
  while (pos < r.out.size()) {
    const size_t eol = r.out.find('\n', pos);
    const std::string line = r.out.substr(pos, eol - pos);
    pos = eol == std::string::npos ? r.out.size() : eol + 1;
    std::vector<int32_t> ids;
    for (const char* p = line.c_str(); *p;) {
      char* end;
      ids.push_back(static_cast<int32_t>(std::strtol(p, &end, 10)));
      if (end == p) break;
      p = end;
    }
    out.push_back(std::move(ids));
  }
  return out;
}

// ---------------------------------------------------------------------------

class TokenizerReferenceTest
    : public ::testing::TestWithParam<std::tuple<const char*, bool, bool>> {};

TEST_P(TokenizerReferenceTest, SameIdsAsThePythonReference) {
  const auto [vocab, parse_special, add_bos] = GetParam();
  std::unique_ptr<Tokenizer> t = Load(vocab);
  ASSERT_NE(t, nullptr);
  const auto expected = Reference(vocab, parse_special, add_bos);
  ASSERT_EQ(expected.size(), Cases().size());
  int mismatches = 0;
  for (size_t i = 0; i < Cases().size(); ++i) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(t->Encode(Cases()[i], add_bos, parse_special, &ids).ok());
    EXPECT_EQ(ids, expected[i])
        << "case " << i << " " << Escape(Cases()[i])
        << "\n  C++:    " << Ids(ids) << "\n  Python: " << Ids(expected[i]);
    mismatches += ids != expected[i];
  }
  EXPECT_EQ(mismatches, 0);
}

// Random strings over an alphabet of the characters the pre-tokenizers
// tell apart.
std::vector<std::string> RandomStrings(int count, uint32_t seed) {
  static const char* kPieces[] = {"a",
                                  "Z",
                                  "k",
                                  "\xC3\xA9",
                                  "\xC3\x9F",
                                  "\xD0\xB6",
                                  "\xCE\xA9",
                                  "\xE4\xB8\xAD",
                                  "\xE3\x81\x82",
                                  "\xD8\xB9",
                                  "\xE0\xA4\x95",
                                  "\xE0\xA5\x8D",
                                  "\xCC\x81",
                                  "0",
                                  "7",
                                  "\xD9\xA3",
                                  "\xC2\xB2",
                                  " ",
                                  " ",
                                  "  ",
                                  "\t",
                                  "\n",
                                  "\r\n",
                                  "\xC2\xA0",
                                  "\xE3\x80\x80",
                                  "'",
                                  "'s",
                                  "'T",
                                  "'re",
                                  "'LL",
                                  ".",
                                  ",",
                                  "!",
                                  "-",
                                  "_",
                                  "(",
                                  ")",
                                  "{",
                                  "<",
                                  "|",
                                  ">",
                                  "\"",
                                  "#",
                                  "$",
                                  "\xF0\x9F\x98\x80",
                                  "\xE2\x80\x8D",
                                  "\xEF\xB8\x8F",
                                  "\xF0\x9F\x8F\xBD",
                                  "\x01",
                                  "\xFF",
                                  "\x80",
                                  "<|eot_id|>",
                                  "[[ternd-user]]",
                                  "<s>"};
  constexpr int kN = sizeof kPieces / sizeof kPieces[0];
  uint32_t x = seed;
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  };
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string s;
    const int len = static_cast<int>(next() % 24);
    for (int k = 0; k < len; ++k) s += kPieces[next() % kN];
    out.push_back(s);
  }
  return out;
}

class TokenizerRandomTest
    : public ::testing::TestWithParam<std::tuple<const char*, bool>> {};

TEST_P(TokenizerRandomTest, SameIdsAsThePythonReference) {
  const auto [vocab, parse_special] = GetParam();
  std::unique_ptr<Tokenizer> t = Load(vocab);
  ASSERT_NE(t, nullptr);
  const std::vector<std::string> cases = RandomStrings(400, 2463534242u);
  const auto expected = Reference(vocab, parse_special, false, cases);
  ASSERT_EQ(expected.size(), cases.size());
  int mismatches = 0;
  for (size_t i = 0; i < cases.size() && mismatches < 10; ++i) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(t->Encode(cases[i], false, parse_special, &ids).ok());
    EXPECT_EQ(ids, expected[i])
        << Escape(cases[i]) << "\n  C++:    " << Ids(ids)
        << "\n  Python: " << Ids(expected[i]);
    mismatches += ids != expected[i];
  }
  EXPECT_EQ(mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, TokenizerRandomTest,
                         ::testing::Combine(::testing::Values("bpe.gguf",
                                                              "bpe_gpt2.gguf",
                                                              "spm.gguf"),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           std::string name = std::get<0>(info.param);
                           name = name.substr(0, name.find('.'));
                           return name + (std::get<1>(info.param) ? "_special"
                                                                  : "_plain");
                         });

INSTANTIATE_TEST_SUITE_P(
    Vocabularies, TokenizerReferenceTest,
    ::testing::Combine(::testing::Values("bpe.gguf", "bpe_gpt2.gguf",
                                         "spm.gguf"),
                       ::testing::Bool(), ::testing::Bool()),
    [](const auto& info) {
      std::string name = std::get<0>(info.param);
      name = name.substr(0, name.find('.'));
      return name + (std::get<1>(info.param) ? "_special" : "_plain") +
             (std::get<2>(info.param) ? "_bos" : "");
    });

class TokenizerVocabTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenizerVocabTest, RoundTripOfValidUtf8) {
  std::unique_ptr<Tokenizer> t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  const bool spm = t->model() == Tokenizer::Model::kLlama;
  for (const std::string& s : Cases()) {
    if (!ValidUtf8(s) && !spm) continue;  // see InvalidUtf8
    for (bool add_bos : {false, true}) {
      std::vector<int32_t> ids;
      ASSERT_TRUE(t->Encode(s, add_bos, false, &ids).ok());
      EXPECT_EQ(t->Decode(ids), s) << Escape(s) << " " << Ids(ids);
      // Special tokens come back as their text when rendered. (llama
      // puts a space prefix after each special token, as llama.cpp does,
      // so its text does not survive this.)
      if (!spm) {
        ASSERT_TRUE(t->Encode(s, add_bos, true, &ids).ok());
        const std::string bos(add_bos ? t->TokenText(t->bos()) : "");
        EXPECT_EQ(t->Decode(ids, true), bos + s) << Escape(s) << Ids(ids);
      }
    }
  }
}

TEST_P(TokenizerVocabTest, StreamingGivesTheSameTextInValidUtf8Chunks) {
  std::unique_ptr<Tokenizer> t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  for (const std::string& s : Cases()) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(t->Encode(s, false, false, &ids).ok());
    std::string decoded;
    for (int32_t id : ids) decoded += t->TokenBytes(id);
    StreamDecoder stream(*t);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string_view chunk = stream.Push(id);
      EXPECT_TRUE(ValidUtf8(chunk)) << Escape(chunk);
      streamed += chunk;
    }
    streamed += stream.Flush();
    if (ValidUtf8(decoded)) {
      EXPECT_EQ(streamed, decoded) << Escape(s);
    } else {
      EXPECT_TRUE(ValidUtf8(streamed)) << Escape(streamed);
    }
  }
}

TEST_P(TokenizerVocabTest, EncodesAPromptOfThousandsOfCharactersQuickly) {
  std::unique_ptr<Tokenizer> t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  std::string text;
  while (text.size() < 4000) {
    for (const std::string& s : Cases()) text += s;
  }
  std::vector<int32_t> ids;
  ASSERT_TRUE(t->Encode(text, true, true, &ids).ok());
  EXPECT_GT(ids.size(), text.size() / 8);
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, TokenizerVocabTest,
                         ::testing::Values("bpe.gguf", "bpe_gpt2.gguf",
                                           "spm.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           return name.substr(0, name.find('.'));
                         });

// ---------------------------------------------------------------------------

// Runs of 256 KiB of one kind of character: no regex limit is hit (PCRE2's
// JIT stack, match limits), and the round trip holds.
TEST(TokenizerTest, LongRuns) {
  std::unique_ptr<Tokenizer> t = Load("bpe.gguf");
  std::unique_ptr<Tokenizer> spm = Load("spm.gguf");
  ASSERT_NE(t, nullptr);
  ASSERT_NE(spm, nullptr);
  const std::string runs[] = {
      std::string(1 << 18, 'a'),
      std::string(1 << 18, ' '),
      std::string(1 << 18, '\n'),
      std::string(1 << 18, '7'),
      std::string(1 << 18, ','),
      std::string(1 << 18, ' ') + "x",
      std::string(1 << 17, ' ') + std::string(1 << 17, '\n'),
  };
  for (const std::string& s : runs) {
    for (const Tokenizer* tok : {t.get(), spm.get()}) {
      std::vector<int32_t> ids;
      const Status st = tok->Encode(s, false, false, &ids);
      ASSERT_TRUE(st.ok()) << st.message();
      EXPECT_EQ(tok->Decode(ids), s);
    }
  }
}

TEST(TokenizerTest, TextLimit) {
  std::unique_ptr<Tokenizer> t = Load("bpe.gguf");
  ASSERT_NE(t, nullptr);
  std::vector<int32_t> ids = {1, 2};
  const Status st =
      t->Encode(std::string(kMaxTextBytes + 1, ' '), false, false, &ids);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_STREQ(st.message(), "text of 8388609 bytes; the limit is 8388608");
  EXPECT_TRUE(ids.empty());
}

TEST(TokenizerTest, Llama3SplitsNumbersInGroupsOfThree) {
  std::unique_ptr<Tokenizer> t = Load("bpe.gguf");
  ASSERT_NE(t, nullptr);
  for (int digits = 1; digits <= 10; ++digits) {
    const std::string s = std::string("1234567890").substr(0, digits);
    std::vector<int32_t> ids;
    ASSERT_TRUE(t->Encode(s, false, false, &ids).ok());
    size_t at = 0;
    for (int32_t id : ids) {
      const size_t len = t->TokenBytes(id).size();
      EXPECT_EQ(at / 3, (at + len - 1) / 3)
          << s << ": a token crosses a group of three";
      at += len;
    }
    EXPECT_EQ(at, s.size());
  }
}

TEST(TokenizerTest, SpecialTokensOnlyWhenParsingSpecial) {
  std::unique_ptr<Tokenizer> t = Load("bpe.gguf");
  ASSERT_NE(t, nullptr);
  const int32_t eot = t->Find("<|eot_id|>");
  ASSERT_GE(eot, 0);
  EXPECT_EQ(t->type(eot), TokenType::kControl);
  std::vector<int32_t> ids;
  ASSERT_TRUE(t->Encode("<|eot_id|>", false, true, &ids).ok());
  EXPECT_EQ(ids, std::vector<int32_t>{eot});
  ASSERT_TRUE(t->Encode("<|eot_id|>", false, false, &ids).ok());
  EXPECT_GT(ids.size(), 1u);
  for (int32_t id : ids) EXPECT_EQ(t->type(id), TokenType::kNormal);
  // A control token prints nothing unless asked for.
  EXPECT_EQ(t->TokenBytes(eot), "");
  EXPECT_EQ(t->TokenBytes(eot, true), "<|eot_id|>");
  // User-defined tokens are always taken whole, and print their text.
  const int32_t user = t->Find("[[ternd-user]]");
  ASSERT_GE(user, 0);
  for (bool parse_special : {false, true}) {
    ASSERT_TRUE(t->Encode("[[ternd-user]]", false, parse_special, &ids).ok());
    EXPECT_EQ(ids, std::vector<int32_t>{user});
  }
  EXPECT_EQ(t->TokenBytes(user), "[[ternd-user]]");
  // BOS on request; the llama-3 vocabulary asks for it.
  EXPECT_TRUE(t->add_bos());
  ASSERT_TRUE(t->Encode("x", true, false, &ids).ok());
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], t->Find("<|begin_of_text|>"));
}

TEST(TokenizerTest, EndOfGeneration) {
  std::unique_ptr<Tokenizer> t = Load("bpe.gguf");
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->IsEog(t->eos()));
  EXPECT_EQ(t->eos(), t->Find("<|end_of_text|>"));
  EXPECT_EQ(t->eot(), t->Find("<|eot_id|>"));
  EXPECT_TRUE(t->IsEog(t->eot()));
  EXPECT_FALSE(t->IsEog(t->bos()));
  EXPECT_FALSE(t->IsEog(t->Find("a")));
  EXPECT_FALSE(t->IsEog(-1));
  EXPECT_FALSE(t->IsEog(t->vocab_size()));
  std::unique_ptr<Tokenizer> spm = Load("spm.gguf");
  ASSERT_NE(spm, nullptr);
  EXPECT_EQ(spm->eos(), spm->Find("</s>"));
  EXPECT_TRUE(spm->IsEog(spm->eos()));
}

TEST(TokenizerTest, IgnoreMergesWithTheLlama3PreTokenizers) {
  std::unique_ptr<Tokenizer> llama3 = Load("bpe.gguf");
  std::unique_ptr<Tokenizer> gpt2 = Load("bpe_gpt2.gguf");
  ASSERT_NE(llama3, nullptr);
  ASSERT_NE(gpt2, nullptr);
  // A token merges cannot reach: taken whole by llama-3 only.
  std::vector<int32_t> a, b;
  ASSERT_TRUE(llama3->Encode(" zzzqqqxxyyz", false, false, &a).ok());
  ASSERT_TRUE(gpt2->Encode(" zzzqqqxxyyz", false, false, &b).ok());
  EXPECT_EQ(a.size(), 1u) << Ids(a);
  EXPECT_GT(b.size(), 1u) << Ids(b);
}

TEST(TokenizerTest, Falcon3IsTheLlama3PreTokenizer) {
  EnsureFixtures();
  Result<gguf::GgufFile> f = gguf::GgufFile::Open(kFixtures + "/bpe.gguf");
  ASSERT_TRUE(f.ok());
  Result<TokenizerData> d = TokenizerDataFromGguf(*f);
  ASSERT_TRUE(d.ok());
  auto llama3 = Tokenizer::Create(*d);
  d->pre = "falcon3";
  auto falcon3 = Tokenizer::Create(*d);
  ASSERT_TRUE(llama3.ok() && falcon3.ok());
  for (const std::string& s : Cases()) {
    std::vector<int32_t> a, b;
    ASSERT_TRUE((*llama3)->Encode(s, false, true, &a).ok());
    ASSERT_TRUE((*falcon3)->Encode(s, false, true, &b).ok());
    EXPECT_EQ(a, b) << Escape(s);
  }
}

TEST(TokenizerTest, InvalidUtf8) {
  std::unique_ptr<Tokenizer> t = Load("bpe.gguf");
  ASSERT_NE(t, nullptr);
  // gpt2: each byte that does not start a valid sequence is read as
  // U+FFFD, as llama.cpp does.
  const std::string r = "\xEF\xBF\xBD";
  const std::pair<std::string, std::string> cases[] = {
      {"\xFF", r},
      {"a\x80"
       "b",
       "a" + r + "b"},
      {"\xE2\x82", r + r},
      {"\xE2\x82"
       "A",
       r + r + "A"},
      {"\xC0\xAF", r + r},
      {"\xED\xA0\x80", r + r + r},
      {"\xF4\x90\x80\x80", r + r + r + r},
      {"\xF0\x9F\x98\x80\xF0\x9F\x98", "\xF0\x9F\x98\x80" + r + r + r},
  };
  for (const auto& [in, out] : cases) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(t->Encode(in, false, false, &ids).ok());
    EXPECT_EQ(t->Decode(ids), out) << Escape(in);
  }
  // llama keeps every byte (byte fallback).
  std::unique_ptr<Tokenizer> spm = Load("spm.gguf");
  ASSERT_NE(spm, nullptr);
  for (const auto& [in, out] : cases) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(spm->Encode(in, false, false, &ids).ok());
    EXPECT_EQ(spm->Decode(ids), in) << Escape(in);
  }
}

TEST(TokenizerTest, ByteFallbackAndTheSpacePrefix) {
  std::unique_ptr<Tokenizer> t = Load("spm.gguf");
  ASSERT_NE(t, nullptr);
  // A character the corpus never had is spelled in byte tokens.
  std::vector<int32_t> ids;
  ASSERT_TRUE(t->Encode("\xE2\x98\x83", false, false, &ids).ok());  // U+2603
  std::vector<int32_t> want = {t->Find("\xE2\x96\x81")};
  for (const char* b : {"<0xE2>", "<0x98>", "<0x83>"}) {
    want.push_back(t->Find(b));
  }
  if (want[0] < 0) want.erase(want.begin());  // "▁" merged with nothing
  EXPECT_EQ(std::vector<int32_t>(ids.end() - 3, ids.end()),
            std::vector<int32_t>(want.end() - 3, want.end()))
      << Ids(ids);
  EXPECT_EQ(t->Decode(ids), "\xE2\x98\x83");
  // The streamed bytes come out as one character, with the prefix space.
  StreamDecoder stream(*t);
  std::string out;
  for (int32_t id : ids) out += stream.Push(id);
  EXPECT_EQ(out, " \xE2\x98\x83");
  EXPECT_EQ(stream.held(), 0u);
}

TEST(TokenizerTest, StreamDecoderHoldsIncompleteCharacters) {
  std::unique_ptr<Tokenizer> t = Load("spm.gguf");
  ASSERT_NE(t, nullptr);
  const int32_t f0 = t->Find("<0xF0>"), b9f = t->Find("<0x9F>"),
                b98 = t->Find("<0x98>"), b80 = t->Find("<0x80>"),
                a = t->Find("<0x41>");
  StreamDecoder s(*t);
  EXPECT_EQ(s.Push(f0), "");
  EXPECT_EQ(s.Push(b9f), "");
  EXPECT_EQ(s.Push(b98), "");
  EXPECT_EQ(s.held(), 3u);
  EXPECT_EQ(s.Push(b80), "\xF0\x9F\x98\x80");
  // A sequence that cannot be completed: U+FFFD per byte, then the text.
  EXPECT_EQ(s.Push(f0), "");
  EXPECT_EQ(s.Push(a),
            "\xEF\xBF\xBD"
            "A");
  // A stray continuation byte.
  EXPECT_EQ(s.Push(b80), "\xEF\xBF\xBD");
  // Flush at the end of a stream.
  EXPECT_EQ(s.Push(f0), "");
  EXPECT_EQ(s.Push(b9f), "");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(s.held(), 0u);
  // Control tokens print nothing, or their text when asked for.
  EXPECT_EQ(s.Push(t->eos()), "");
  StreamDecoder special(*t, true);
  EXPECT_EQ(special.Push(t->eos()), "</s>");
  // Ids out of range give nothing.
  EXPECT_EQ(s.Push(-5), "");
  EXPECT_EQ(s.Push(t->vocab_size()), "");
}

// ---------------------------------------------------------------------------
// Malformed tokenizer data: each refused with a message naming what is
// wrong.

// 256 byte characters, "a b" merges up to "abc", two control tokens.
TokenizerData SmallGpt2() {
  TokenizerData d;
  d.model = "gpt2";
  d.pre = "llama-bpe";
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? b : 256 + n++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    d.tokens.push_back(s);
  }
  d.tokens.insert(d.tokens.end(), {"ab", "abc", "<s>", "</s>"});
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[258] = d.token_types[259] = 3;
  d.merges = {"a b", "ab c"};
  d.bos = 258;
  d.eos = 259;
  return d;
}

TokenizerData SmallLlama() {
  TokenizerData d;
  d.model = "llama";
  d.tokens = {"<unk>", "<s>", "</s>"};
  d.token_types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    d.tokens.push_back(hex);
    d.token_types.push_back(6);
  }
  d.tokens.insert(d.tokens.end(), {"\xE2\x96\x81", "a",
                                   "\xE2\x96\x81"
                                   "a"});
  d.token_types.insert(d.token_types.end(), {1, 1, 1});
  d.scores.assign(d.tokens.size(), 0.0f);
  d.scores.back() = 1.0f;
  d.unk = 0;
  d.bos = 1;
  d.eos = 2;
  d.add_bos = true;
  return d;
}

std::string CreateError(const TokenizerData& d) {
  auto t = Tokenizer::Create(d);
  EXPECT_FALSE(t.ok());
  return t.ok() ? "" : t.status().message();
}

TEST(TokenizerErrorTest, SmallVocabulariesWork) {
  auto gpt2 = Tokenizer::Create(SmallGpt2());
  ASSERT_TRUE(gpt2.ok()) << gpt2.status().message();
  std::vector<int32_t> ids;
  ASSERT_TRUE((*gpt2)->Encode("abc ab<s>", true, true, &ids).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{258, 257, (*gpt2)->Find("\xC4\xA0"), 256,
                                       258}));
  auto llama = Tokenizer::Create(SmallLlama());
  ASSERT_TRUE(llama.ok()) << llama.status().message();
  ASSERT_TRUE((*llama)->Encode("a b", true, false, &ids).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 261, 259, 3 + 'b'}));
  EXPECT_EQ((*llama)->Decode(ids), "a b");
}

TEST(TokenizerErrorTest, ModelAndPreTokenizer) {
  TokenizerData d = SmallGpt2();
  d.model = "bert";
  EXPECT_NE(CreateError(d).find("tokenizer model 'bert' is not supported"),
            std::string::npos);
  d = SmallGpt2();
  d.pre = "qwen2";
  const std::string e = CreateError(d);
  EXPECT_NE(e.find("pre-tokenizer 'qwen2'"), std::string::npos) << e;
  EXPECT_NE(e.find("llama-bpe"), std::string::npos) << e;
  d.pre = "";
  EXPECT_NE(CreateError(d).find("pre-tokenizer ''"), std::string::npos);
}

TEST(TokenizerErrorTest, Tokens) {
  TokenizerData d = SmallGpt2();
  d.tokens.clear();
  EXPECT_NE(CreateError(d).find("no tokens"), std::string::npos);
  d = SmallGpt2();
  d.token_types.pop_back();
  EXPECT_NE(CreateError(d).find("259 token types for 260 tokens"),
            std::string::npos);
  d = SmallGpt2();
  d.token_types[40] = 9;
  EXPECT_NE(CreateError(d).find("token 40 '(' has type 9"), std::string::npos)
      << CreateError(d);
  d = SmallGpt2();
  d.tokens[257] = "";
  EXPECT_NE(CreateError(d).find("token 257 (normal) is empty"),
            std::string::npos);
  d = SmallGpt2();
  d.tokens[257] = std::string(kMaxTokenBytes + 1, 'x');
  EXPECT_NE(CreateError(d).find("token 257 is 4097 bytes long"),
            std::string::npos);
  d = SmallGpt2();
  d.scores.assign(d.tokens.size(), 0.0f);
  d.scores[36] = std::nanf("");
  EXPECT_NE(CreateError(d).find("token 36 '$' has score nan"),
            std::string::npos)
      << CreateError(d);
  d.scores.pop_back();
  EXPECT_NE(CreateError(d).find("259 scores for 260 tokens"),
            std::string::npos);
  // gpt2: every byte needs its byte character...
  d = SmallGpt2();
  d.tokens[65] = "AA";
  EXPECT_NE(CreateError(d).find("no token for byte 0x41"), std::string::npos)
      << CreateError(d);
  // ...and normal tokens must be made of them.
  d = SmallGpt2();
  d.tokens[257] = "a\xE2\x96\x81";
  EXPECT_NE(CreateError(d).find("normal token 257"), std::string::npos)
      << CreateError(d);
  EXPECT_NE(CreateError(d).find("U+2581"), std::string::npos);
  d.tokens[257] = "\xFF";
  EXPECT_NE(CreateError(d).find("token 257 '\xFF' is not valid UTF-8"),
            std::string::npos)
      << CreateError(d);
}

TEST(TokenizerErrorTest, Merges) {
  TokenizerData d = SmallGpt2();
  d.merges.push_back("abc");
  EXPECT_NE(CreateError(d).find(
                "merge 2 'abc' is not two tokens separated by a space"),
            std::string::npos);
  d.merges.back() = "a bc";
  EXPECT_NE(CreateError(d).find("merge 2 'a bc': 'bc' is not a token"),
            std::string::npos)
      << CreateError(d);
  d.merges.back() = "b c";
  EXPECT_NE(CreateError(d).find("merge 2 'b c': the merged 'bc' is not a "
                                "token"),
            std::string::npos)
      << CreateError(d);
  d.merges.back() = "a ";
  EXPECT_NE(CreateError(d).find("merge 2"), std::string::npos);
}

TEST(TokenizerErrorTest, SpecialIds) {
  TokenizerData d = SmallGpt2();
  d.bos = 260;
  EXPECT_NE(CreateError(d).find("BOS token id 260 is out of range (260 "
                                "tokens)"),
            std::string::npos);
  d = SmallGpt2();
  d.eot = -7;
  EXPECT_NE(CreateError(d).find("EOT token id -7"), std::string::npos);
  d = SmallGpt2();
  d.bos = -1;
  d.add_bos = true;
  EXPECT_NE(CreateError(d).find("add_bos is set but there is no BOS"),
            std::string::npos);
  // Encode with BOS when there is none.
  d.add_bos = false;
  auto t = Tokenizer::Create(d);
  ASSERT_TRUE(t.ok());
  std::vector<int32_t> ids;
  EXPECT_FALSE((*t)->Encode("a", true, false, &ids).ok());
}

TEST(TokenizerErrorTest, LlamaByteTokens) {
  TokenizerData d = SmallLlama();
  d.tokens[3 + 0x41] = "<0xZZ>";
  EXPECT_NE(CreateError(d).find("byte token 68 is '<0xZZ>', not <0xNN>"),
            std::string::npos)
      << CreateError(d);
  // A missing byte token falls back to the unknown token...
  d = SmallLlama();
  d.tokens[3 + 0x41] = "x";
  d.token_types[3 + 0x41] = 1;
  auto t = Tokenizer::Create(d);
  ASSERT_TRUE(t.ok());
  std::vector<int32_t> ids;
  ASSERT_TRUE((*t)->Encode("A", false, false, &ids).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{259, 0}));
  // ...and without one is an error.
  d.unk = -1;
  d.token_types[0] = 1;
  EXPECT_NE(CreateError(d).find("no byte token <0x41>"), std::string::npos)
      << CreateError(d);
}

// ---------------------------------------------------------------------------
// The GGUF keys.

// A GGUF v3 file with the given metadata (no tensors).
class GgufBytes {
 public:
  void Str(const std::string& key, const std::string& value) {
    Key(key, 8);
    String(value);
    ++n_;
  }
  void U32(const std::string& key, uint32_t v) {
    Key(key, 4);
    Raw(&v, 4);
    ++n_;
  }
  void Strings(const std::string& key, const std::vector<std::string>& v) {
    Key(key, 9);
    const uint32_t t = 8;
    const uint64_t n = v.size();
    Raw(&t, 4);
    Raw(&n, 8);
    for (const std::string& s : v) String(s);
    ++n_;
  }
  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    const uint64_t zero = 0;
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(&zero),
               reinterpret_cast<const uint8_t*>(&zero) + 8);
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(&n_),
               reinterpret_cast<const uint8_t*>(&n_) + 8);
    out.insert(out.end(), kv_.begin(), kv_.end());
    return out;
  }

 private:
  void Raw(const void* p, size_t n) {
    kv_.insert(kv_.end(), static_cast<const uint8_t*>(p),
               static_cast<const uint8_t*>(p) + n);
  }
  void String(const std::string& s) {
    const uint64_t n = s.size();
    Raw(&n, 8);
    Raw(s.data(), s.size());
  }
  void Key(const std::string& key, uint32_t type) {
    String(key);
    Raw(&type, 4);
  }
  std::vector<uint8_t> kv_;
  uint64_t n_ = 0;
};

std::string LoadError(const GgufBytes& g) {
  Result<gguf::GgufFile> f = gguf::GgufFile::Parse(g.Bytes(), "t.gguf");
  EXPECT_TRUE(f.ok()) << f.status().message();
  if (!f.ok()) return "";
  Result<TokenizerData> d = TokenizerDataFromGguf(*f);
  EXPECT_FALSE(d.ok());
  return d.ok() ? "" : d.status().message();
}

TEST(TokenizerGgufTest, KeysAndDefaults) {
  GgufBytes g;
  EXPECT_NE(LoadError(g).find("'tokenizer.ggml.model' is missing"),
            std::string::npos)
      << LoadError(g);
  g.Str("tokenizer.ggml.model", "llama");
  EXPECT_NE(LoadError(g).find("'tokenizer.ggml.tokens' is missing"),
            std::string::npos);
  g.Strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  {
    Result<gguf::GgufFile> f = gguf::GgufFile::Parse(g.Bytes(), "t.gguf");
    ASSERT_TRUE(f.ok());
    Result<TokenizerData> d = TokenizerDataFromGguf(*f);
    ASSERT_TRUE(d.ok()) << d.status().message();
    // llama.cpp's defaults for llama vocabularies.
    EXPECT_EQ(d->bos, 1);
    EXPECT_EQ(d->eos, 2);
    EXPECT_EQ(d->unk, 0);
    EXPECT_TRUE(d->add_bos);
    EXPECT_TRUE(d->add_space_prefix);
  }
  g.U32("tokenizer.ggml.eos_token_id", 9);
  EXPECT_NE(LoadError(g).find("'tokenizer.ggml.eos_token_id' is 9, but there "
                              "are 4 tokens"),
            std::string::npos)
      << LoadError(g);
  GgufBytes wrong;
  wrong.Str("tokenizer.ggml.model", "gpt2");
  wrong.Str("tokenizer.ggml.tokens", "not an array");
  EXPECT_NE(LoadError(wrong).find("tokenizer.ggml.tokens"), std::string::npos)
      << LoadError(wrong);
}

TEST(TokenizerGgufTest, TheTrainedFilesHaveTheLlama3Layout) {
  EnsureFixtures();
  Result<gguf::GgufFile> f = gguf::GgufFile::Open(kFixtures + "/bpe.gguf");
  ASSERT_TRUE(f.ok());
  Result<TokenizerData> d = TokenizerDataFromGguf(*f);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->model, "gpt2");
  EXPECT_EQ(d->pre, "llama-bpe");
  EXPECT_GE(d->merges.size(), 1000u);
  EXPECT_TRUE(d->add_bos);
  EXPECT_EQ(d->tokens[d->bos], "<|begin_of_text|>");
  EXPECT_EQ(d->tokens[d->eos], "<|end_of_text|>");
  EXPECT_EQ(d->tokens[d->eot], "<|eot_id|>");
}

}  // namespace
}  // namespace ternd::tokenizer
