// Fuzzes the tokenizer: Create on vocabularies built from the input (both
// models, valid ones and ones broken in every way the input picks), then
// Encode, Decode and StreamDecoder on text from the input. An input that
// starts with "GGUF" is read as a GGUF file instead (the tokenizer.ggml.*
// keys through TokenizerDataFromGguf; seed: corpus/tokenizer/small.gguf). Any
// crash, sanitizer report or leak is a bug, and so is a broken invariant:
//   - every id Encode gives is in range;
//   - on a vocabulary without special tokens, Decode(Encode(s)) is s (gpt2:
//     with each byte of invalid UTF-8 read as U+FFFD; llama: with U+2581
//     read as a space);
//   - every piece StreamDecoder returns is valid UTF-8.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/gguf/gguf_reader.h"
#include "runtime/tokenizer/gguf_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

namespace {

using ternd::tokenizer::StreamDecoder;
using ternd::tokenizer::Tokenizer;
using ternd::tokenizer::TokenizerData;
using ternd::tokenizer::Utf8SequenceLength;

void Check(bool ok) {
  if (!ok) __builtin_trap();
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

std::string Sanitize(std::string_view s) {
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const int n = Utf8SequenceLength(p + i, s.size() - i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// GPT-2's byte character of `b`, as UTF-8.
std::string ByteChar(uint8_t b) {
  static std::vector<std::string> chars = [] {
    std::vector<std::string> c(256);
    int n = 0;
    for (int i = 0; i < 256; ++i) {
      const bool printable =
          (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
      const unsigned cp = printable ? i : 256 + n++;
      if (cp < 0x80) {
        c[i] = std::string(1, static_cast<char>(cp));
      } else {
        c[i] = {static_cast<char>(0xC0 | (cp >> 6)),
                static_cast<char>(0x80 | (cp & 0x3F))};
      }
    }
    return c;
  }();
  return chars[b];
}

std::string ByteEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) out += ByteChar(c);
  return out;
}

}  // namespace

void EncodeAndDecode(const Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids;
  for (bool special : {false, true}) {
    Check(tok.Encode(text, false, special, &ids).ok());
    for (int32_t id : ids) Check(id >= 0 && id < tok.vocab_size());
    StreamDecoder stream(tok, special);
    for (int32_t id : ids) Check(ValidUtf8(stream.Push(id)));
    Check(ValidUtf8(stream.Flush()));
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) {
    auto file = ternd::gguf::GgufFile::Parse(
        std::vector<uint8_t>(data, data + size), "fuzz");
    if (!file.ok()) return 0;
    auto d = ternd::tokenizer::TokenizerDataFromGguf(*file);
    if (!d.ok()) return 0;
    auto t = Tokenizer::Create(*d);
    if (!t.ok()) return 0;
    EncodeAndDecode(**t, "Hello, world! <|eot_id|> 123456 \xF0\x9F\x98\x80");
    return 0;
  }
  FuzzedDataProvider in(data, size);
  TokenizerData d;
  const bool gpt2 = in.ConsumeBool();
  const bool clean = in.ConsumeBool();  // normal tokens only, all bytes
  d.model = gpt2 ? "gpt2" : "llama";
  if (!clean && in.ConsumeBool()) d.model = in.ConsumeRandomLengthString(8);
  static const char* kPres[] = {"llama-bpe", "falcon3", "gpt-2", "llama3",
                                "qwen2"};
  d.pre = kPres[in.ConsumeIntegralInRange<int>(0, 4)];
  if (clean && d.pre == std::string("qwen2")) d.pre = "llama-bpe";

  if (gpt2) {
    for (int b = 0; b < 256; ++b) d.tokens.push_back(ByteChar(b));
  } else {
    d.tokens = {"<unk>", "<s>", "</s>"};
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "<0x%02X>", b);
      d.tokens.push_back(hex);
    }
    // A space is "▁" (without it, it would come back as the bytes of
    // "▁", as with llama.cpp: every real vocabulary has it).
    d.tokens.push_back("\xE2\x96\x81");
  }
  // Words, and merges that make them.
  const int words = in.ConsumeIntegralInRange<int>(0, 40);
  for (int w = 0; w < words; ++w) {
    std::string s = in.ConsumeRandomLengthString(12);
    if (gpt2 && s.size() >= 2) {
      const size_t cut = 1 + in.ConsumeIntegralInRange<size_t>(0, s.size() - 2);
      const std::string l = ByteEncode(s.substr(0, cut)),
                        r = ByteEncode(s.substr(cut));
      d.tokens.push_back(l);
      d.tokens.push_back(r);
      d.tokens.push_back(l + r);
      d.merges.push_back(l + " " + r);
    } else if (!gpt2) {
      std::string t;  // letters and U+2581 only: never "<0xNN>"
      for (unsigned char c : s) {
        t += c % 5 == 0 ? std::string("\xE2\x96\x81")
                        : std::string(1, static_cast<char>('a' + c % 26));
      }
      if (!t.empty()) d.tokens.push_back(t);
    }
  }
  if (gpt2 && in.ConsumeBool()) {  // reorder the merges
    for (size_t i = 0; i + 1 < d.merges.size(); i += 2) {
      std::swap(d.merges[i], d.merges[i + 1]);
    }
  }
  const size_t n = d.tokens.size();
  d.token_types.assign(n, 1);
  if (!gpt2) {
    d.token_types[0] = 2;
    d.token_types[1] = d.token_types[2] = 3;
    for (int b = 0; b < 256; ++b) d.token_types[3 + b] = 6;
    d.unk = 0;
    d.bos = 1;
    d.eos = 2;
  }
  d.scores.resize(n);
  for (float& s : d.scores) s = in.ConsumeIntegralInRange<int>(-100, 100);
  d.add_space_prefix = in.ConsumeBool();
  if (!clean) {
    // Specials, broken tokens, types, merges and ids, as the input says.
    const int edits = in.ConsumeIntegralInRange<int>(0, 8);
    for (int e = 0; e < edits && !d.tokens.empty(); ++e) {
      const size_t i =
          in.ConsumeIntegralInRange<size_t>(0, d.tokens.size() - 1);
      switch (in.ConsumeIntegralInRange<int>(0, 6)) {
        case 0:
          d.token_types[i] = in.ConsumeIntegralInRange<int>(-1, 7);
          break;
        case 1:
          d.tokens[i] = in.ConsumeRandomLengthString(10);
          break;
        case 2:
          d.tokens.push_back(in.ConsumeRandomLengthString(10));
          d.token_types.push_back(in.ConsumeIntegralInRange<int>(3, 4));
          d.scores.push_back(0);
          break;
        case 3:
          d.merges.push_back(in.ConsumeRandomLengthString(10));
          break;
        case 4:
          d.bos = in.ConsumeIntegralInRange<int32_t>(-2, d.tokens.size() + 1);
          d.eot = in.ConsumeIntegralInRange<int32_t>(-2, d.tokens.size() + 1);
          break;
        case 5:
          d.scores[i] = in.ConsumeFloatingPoint<float>();
          break;
        case 6:
          d.tokens.erase(d.tokens.begin() + i);
          break;
      }
    }
    d.add_bos = in.ConsumeBool();
  }
  const bool add_bos = in.ConsumeBool();
  const bool parse_special = in.ConsumeBool();
  const std::string text = in.ConsumeRemainingBytesAsString();

  auto t = Tokenizer::Create(d);
  Check(!clean || t.ok());
  if (!t.ok()) return 0;
  const Tokenizer& tok = **t;
  std::vector<int32_t> ids;
  const bool bos = add_bos && tok.bos() >= 0;
  Check(tok.Encode(text, bos, parse_special, &ids).ok());
  for (int32_t id : ids) Check(id >= 0 && id < tok.vocab_size());
  // (llama's <s>, </s> and <unk> are control and unknown tokens: taken
  // only when parsing special tokens, which then breaks the round trip.)
  if (clean && (gpt2 || !parse_special)) {
    const std::string decoded = tok.Decode(ids);
    // llama: a "▁" in the text is a space (as in SentencePiece).
    std::string want = gpt2 ? Sanitize(text) : text;
    for (size_t k;
         !gpt2 && (k = want.find("\xE2\x96\x81")) != std::string::npos;) {
      want.replace(k, 3, " ");
    }
    if (decoded != want) {
      std::fprintf(stderr,
                   "round trip broken (%s, pre %s)\ntext:", d.model.c_str(),
                   d.pre.c_str());
      for (unsigned char c : text) std::fprintf(stderr, " %02X", c);
      std::fprintf(stderr, "\ndecoded:");
      for (unsigned char c : decoded) std::fprintf(stderr, " %02X", c);
      std::fprintf(stderr, "\nids:");
      for (int32_t id : ids) {
        std::fprintf(stderr, " %d '%s'", id,
                     std::string(tok.TokenText(id)).c_str());
      }
      std::fprintf(stderr, "\n");
      __builtin_trap();
    }
  }
  tok.Decode(ids, true);
  StreamDecoder stream(tok, parse_special);
  for (int32_t id : ids) Check(ValidUtf8(stream.Push(id)));
  Check(ValidUtf8(stream.Flush()));
  for (int32_t id : ids) tok.IsEog(id);
  return 0;
}
