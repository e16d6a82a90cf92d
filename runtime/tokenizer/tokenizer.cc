#include "runtime/tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <queue>
#include <utility>

namespace ternd::tokenizer {
namespace {

// The pre-tokenizer regexes, as llama.cpp runs them:
//   llama-3: (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])
//            |[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
//            |\s*[\r\n]+|\s+(?!\S)|\s+
//   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+
//            |\s+(?!\S)
// PCRE2's \s with PCRE2_UCP also matches U+180E (MONGOLIAN VOWEL
// SEPARATOR, no longer white space since Unicode 6.3); llama.cpp, Python's
// regex module and Hugging Face use the White_Space property, which is
// exactly [\t-\r\x{85}\p{Z}], so \s is spelled that way here.
#define TERND_WS "\\t-\\r\\x{85}\\p{Z}"
constexpr char kLlama3Regex[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^" TERND_WS "\\p{L}\\p{N}]+[\\r\\n]*|[" TERND_WS
    "]*[\\r\\n]+"
    "|[" TERND_WS "]+(?![^" TERND_WS "])|[" TERND_WS "]+";
constexpr char kGpt2Regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" TERND_WS
    "\\p{L}\\p{N}]+|[" TERND_WS "]+(?![^" TERND_WS "])";
#undef TERND_WS

struct PreTokenizer {
  const char* name;
  const char* regex;
  bool ignore_merges;
  bool add_bos;
};
constexpr PreTokenizer kPreTokenizers[] = {
    {"llama-bpe", kLlama3Regex, true, true},
    {"llama3", kLlama3Regex, true, true},
    {"llama-v3", kLlama3Regex, true, true},
    {"falcon3", kLlama3Regex, true, true},
    {"gpt-2", kGpt2Regex, false, false},
};

const PreTokenizer* FindPre(std::string_view name) {
  for (const PreTokenizer& p : kPreTokenizers) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

// The texts of the tokens llama.cpp ends generation at.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|end_of_text|>",   "<|im_end|>",    "<|end|>",
    "<|eom_id|>", "<|endoftext|>",     "<end_of_turn>", "<EOT>",
    "_<EOT>",     "<end_of_utterance>"};
// llama.cpp's automatic EOT: the first of these that is a token.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<EOT>",      "_<EOT>"};

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others
// to U+0100 and up in byte order.
std::array<uint32_t, 256> ByteToCodepoint() {
  std::array<uint32_t, 256> map{};
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                           (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : 256 + n++;
  }
  return map;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The code points of UTF-8 `s`; false if it is not valid UTF-8.
bool DecodeCodepoints(std::string_view s, std::vector<uint32_t>* cps) {
  cps->clear();
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    const int len = Utf8SequenceLength(p + i, s.size() - i);
    if (len <= 0) return false;
    uint32_t cp = len == 1 ? p[i] : p[i] & (0x7F >> len);
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
    cps->push_back(cp);
    i += len;
  }
  return true;
}

// For error messages: the token's text, cut and with control bytes
// escaped.
std::string Quote(std::string_view s) {
  std::string out;
  size_t i = 0;
  for (; i < s.size() && out.size() < 60; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F || c == '\'' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (i < s.size()) out += "...";
  return "'" + out + "'";
}

const char* TypeName(TokenType t) {
  switch (t) {
    case TokenType::kUndefined:
      return "undefined";
    case TokenType::kNormal:
      return "normal";
    case TokenType::kUnknown:
      return "unknown";
    case TokenType::kControl:
      return "control";
    case TokenType::kUserDefined:
      return "user-defined";
    case TokenType::kUnused:
      return "unused";
    case TokenType::kByte:
      return "byte";
  }
  return "?";
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0x0A>" -> 10, or -1.
int ByteTokenValue(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  const int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

bool IsSpecialType(TokenType t) {
  return t == TokenType::kControl || t == TokenType::kUnknown ||
         t == TokenType::kUserDefined;
}

}  // namespace

int Utf8SequenceLength(const uint8_t* p, size_t n) {
  if (n == 0) return 0;
  const uint8_t b = p[0];
  if (b < 0x80) return 1;
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k < len; ++k) {
    if (static_cast<size_t>(k) >= n) return -1;
    const uint8_t c = p[k];
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return 0;
  }
  return len;
}

bool DefaultAddBos(std::string_view model, std::string_view pre) {
  if (model == "llama") return true;
  const PreTokenizer* p = FindPre(pre);
  return model == "gpt2" && p != nullptr && p->add_bos;
}

const char* SupportedPreTokenizers() {
  return "llama-bpe, llama3, llama-v3, falcon3, gpt-2";
}

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

// Per-call buffers of Encode.
struct Tokenizer::Scratch {
  std::vector<Fragment> frags;
  std::string text;  // sanitized UTF-8, or llama's escaped text
  std::string word;  // a byte-encoded piece
  struct Symbol {
    int32_t id;  // gpt2: the token; -1 once merged away
    int32_t prev, next;
    uint32_t begin, len;  // llama: the bytes; len 0 once merged away
  };
  std::vector<Symbol> syms;
  struct Bigram {
    float score;  // llama: higher first; gpt2: -rank
    int32_t left, right;
    int32_t left_id, right_id;  // gpt2
    uint32_t size;              // llama
  };
  struct BigramOrder {
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  std::vector<Bigram> heap;
  pcre2_match_data* md = nullptr;
  ~Scratch() { pcre2_match_data_free(md); }
};

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::Create(
    const TokenizerData& data) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  TERND_RETURN_IF_ERROR(t->Init(data));
  return t;
}

Status Tokenizer::Init(const TokenizerData& d) {
  if (d.model == "gpt2") {
    model_ = Model::kGpt2;
  } else if (d.model == "llama") {
    model_ = Model::kLlama;
  } else {
    return Unimplemented(
        "tokenizer model %s is not supported (supported: gpt2, llama)",
        Quote(d.model).c_str());
  }
  const size_t n = d.tokens.size();
  if (n == 0) return InvalidArgument("the vocabulary has no tokens");
  if (n > kMaxTokens) {
    return InvalidArgument("the vocabulary has %zu tokens; the limit is %zu", n,
                           kMaxTokens);
  }
  if (!d.token_types.empty() && d.token_types.size() != n) {
    return InvalidArgument("%zu token types for %zu tokens",
                           d.token_types.size(), n);
  }
  if (!d.scores.empty() && d.scores.size() != n) {
    return InvalidArgument("%zu scores for %zu tokens", d.scores.size(), n);
  }
  types_.assign(n, TokenType::kNormal);
  scores_.assign(n, 0.0f);
  text_off_.assign(n + 1, 0);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!d.token_types.empty()) {
      const int32_t t = d.token_types[i];
      if (t < 0 || t > 6) {
        return InvalidArgument(
            "token %zu %s has type %d (types are 0 to 6: undefined, "
            "normal, unknown, control, user-defined, unused, byte)",
            i, Quote(d.tokens[i]).c_str(), t);
      }
      types_[i] = static_cast<TokenType>(t);
    }
    if (!d.scores.empty()) {
      if (!std::isfinite(d.scores[i])) {
        return InvalidArgument("token %zu %s has score %g", i,
                               Quote(d.tokens[i]).c_str(), d.scores[i]);
      }
      scores_[i] = d.scores[i];
    }
    const std::string& s = d.tokens[i];
    if (s.empty() && types_[i] != TokenType::kUnused &&
        types_[i] != TokenType::kUndefined) {
      return InvalidArgument("token %zu (%s) is empty", i, TypeName(types_[i]));
    }
    if (s.size() > kMaxTokenBytes) {
      return InvalidArgument("token %zu is %zu bytes long; the limit is %zu", i,
                             s.size(), kMaxTokenBytes);
    }
    max_token_bytes_ = std::max(max_token_bytes_, s.size());
    total += s.size();
    text_off_[i + 1] = static_cast<uint32_t>(total);
  }
  text_arena_.reserve(total);
  for (const std::string& s : d.tokens) text_arena_ += s;
  ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // The last of equal strings wins, as in llama.cpp.
    ids_[TokenText(static_cast<int32_t>(i))] = static_cast<int32_t>(i);
  }

  const struct {
    const char* name;
    int32_t id;
    int32_t* field;
  } specials[] = {{"BOS", d.bos, &bos_}, {"EOS", d.eos, &eos_},
                  {"EOT", d.eot, &eot_}, {"EOM", d.eom, &eom_},
                  {"UNK", d.unk, &unk_}, {"PAD", d.pad, &pad_}};
  for (const auto& s : specials) {
    if (s.id < -1 || s.id >= static_cast<int64_t>(n)) {
      return InvalidArgument("%s token id %d is out of range (%zu tokens)",
                             s.name, s.id, n);
    }
    *s.field = s.id;
  }
  add_bos_ = d.add_bos;
  add_eos_ = d.add_eos;
  add_space_prefix_ = d.add_space_prefix;
  if (add_bos_ && bos_ < 0) {
    return InvalidArgument("add_bos is set but there is no BOS token");
  }
  if (add_eos_ && eos_ < 0) {
    return InvalidArgument("add_eos is set but there is no EOS token");
  }

  pre_ = d.pre;

  // Pieces: what each token decodes to (control and unknown: nothing).
  piece_off_.assign(n + 1, 0);
  max_piece_bytes_ = 0;
  const std::array<uint32_t, 256> to_cp = ByteToCodepoint();
  std::unordered_map<uint32_t, uint8_t> from_cp;
  for (int b = 0; b < 256; ++b) from_cp[to_cp[b]] = static_cast<uint8_t>(b);
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < n; ++i) {
    const std::string_view text = TokenText(static_cast<int32_t>(i));
    switch (types_[i]) {
      case TokenType::kNormal:
        if (model_ == Model::kGpt2) {
          if (!DecodeCodepoints(text, &cps)) {
            return InvalidArgument("token %zu %s is not valid UTF-8", i,
                                   Quote(text).c_str());
          }
          for (uint32_t cp : cps) {
            auto it = from_cp.find(cp);
            if (it == from_cp.end()) {
              return InvalidArgument(
                  "normal token %zu %s has U+%04X, which is not one of "
                  "GPT-2's byte characters",
                  i, Quote(text).c_str(), cp);
            }
            piece_arena_.push_back(static_cast<char>(it->second));
          }
        } else {
          for (size_t k = 0; k < text.size();) {
            if (text.substr(k, 3) == kSpaceMarker) {
              piece_arena_.push_back(' ');
              k += 3;
            } else {
              piece_arena_.push_back(text[k++]);
            }
          }
        }
        break;
      case TokenType::kByte:
        if (model_ == Model::kLlama) {
          const int b = ByteTokenValue(text);
          if (b < 0) {
            return InvalidArgument("byte token %zu is %s, not <0xNN>", i,
                                   Quote(text).c_str());
          }
          piece_arena_.push_back(static_cast<char>(b));
        }
        break;
      case TokenType::kUserDefined:
        piece_arena_.append(text);
        break;
      default:
        break;
    }
    piece_off_[i + 1] = static_cast<uint32_t>(piece_arena_.size());
    max_piece_bytes_ = std::max(
        {max_piece_bytes_,
         static_cast<size_t>(piece_off_[i + 1] - piece_off_[i]), text.size()});
  }

  TERND_RETURN_IF_ERROR(model_ == Model::kGpt2 ? InitGpt2(d) : InitLlama(d));
  InitSpecials();
  return Status::Ok();
}

Status Tokenizer::InitGpt2(const TokenizerData& d) {
  const PreTokenizer* pre = FindPre(d.pre);
  if (pre == nullptr) {
    return Unimplemented(
        "pre-tokenizer %s (tokenizer.ggml.pre) is not supported (supported: "
        "%s)",
        Quote(d.pre).c_str(), SupportedPreTokenizers());
  }
  ignore_merges_ = pre->ignore_merges;
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  regex_ = std::make_unique<Regex>();
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pre->regex),
                               PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                               &err, &err_offset, nullptr);
  if (regex_->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return Internal("pre-tokenizer regex of %s does not compile at %zu: %s",
                    pre->name, static_cast<size_t>(err_offset),
                    reinterpret_cast<const char*>(msg));
  }
  // JIT where PCRE2 has it (x86-64, arm64, armhf); the interpreter
  // otherwise, with the same results.
  pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE);

  // Every byte must have its byte character as a token.
  const std::array<uint32_t, 256> to_cp = ByteToCodepoint();
  std::string ch;
  for (int b = 0; b < 256; ++b) {
    ch.clear();
    AppendUtf8(to_cp[b], &ch);
    const int32_t id = Find(ch);
    if (id < 0) {
      return InvalidArgument(
          "no token for byte 0x%02X (GPT-2 byte character %s, U+%04X)", b,
          Quote(ch).c_str(), to_cp[b]);
    }
    byte_ids_[b] = id;
  }

  if (d.merges.size() > kMaxTokens) {
    return InvalidArgument("%zu merges; the limit is %zu", d.merges.size(),
                           kMaxTokens);
  }
  merges_.reserve(d.merges.size());
  for (size_t i = 0; i < d.merges.size(); ++i) {
    const std::string& m = d.merges[i];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return InvalidArgument(
          "merge %zu %s is not two tokens separated by a space", i,
          Quote(m).c_str());
    }
    const std::string_view left(m.data(), sp),
        right(m.data() + sp + 1, m.size() - sp - 1);
    const int32_t l = Find(left), r = Find(right);
    if (l < 0 || r < 0) {
      return InvalidArgument("merge %zu %s: %s is not a token", i,
                             Quote(m).c_str(),
                             Quote(l < 0 ? left : right).c_str());
    }
    std::string joined(left);
    joined += right;
    const int32_t result = Find(joined);
    if (result < 0) {
      return InvalidArgument("merge %zu %s: the merged %s is not a token", i,
                             Quote(m).c_str(), Quote(joined).c_str());
    }
    const uint64_t key =
        static_cast<uint64_t>(l) << 32 | static_cast<uint32_t>(r);
    // The first of equal merges counts, as in llama.cpp.
    merges_.emplace(key, Merge{static_cast<int32_t>(i), result});
  }
  return Status::Ok();
}

Status Tokenizer::InitLlama(const TokenizerData&) {
  // Byte fallback as llama.cpp finds it: <0xNN>, else the byte itself.
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    int32_t id = Find(hex);
    const char raw = static_cast<char>(b);
    if (id < 0) id = Find(std::string_view(&raw, 1));
    if (id < 0) id = unk_;
    if (id < 0) {
      return InvalidArgument(
          "no byte token %s for byte fallback, and no unknown token", hex);
    }
    byte_ids_[b] = id;
  }
  return Status::Ok();
}

void Tokenizer::InitSpecials() {
  const int32_t n = vocab_size();
  std::vector<int32_t> order;
  for (int32_t i = 0; i < n; ++i) {
    if (IsSpecialType(types_[i]) && !TokenText(i).empty()) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return TokenText(a).size() > TokenText(b).size();
  });
  special_rank_.assign(n, -1);
  trie_.assign(1, TrieNode{});
  for (size_t r = 0; r < order.size(); ++r) {
    const int32_t id = order[r];
    special_rank_[id] = static_cast<int32_t>(r);
    int32_t node = 0;
    for (char c : TokenText(id)) {
      const auto b = static_cast<uint8_t>(c);
      int32_t next = -1;
      for (const auto& [byte, child] : trie_[node].next) {
        if (byte == b) next = child;
      }
      if (next < 0) {
        next = static_cast<int32_t>(trie_.size());
        trie_[node].next.emplace_back(b, next);
        trie_.emplace_back();
      }
      node = next;
    }
    // Equal texts: the first id (of those that count) is taken.
    if (trie_[node].token < 0) trie_[node].token = id;
    if (trie_[node].user_token < 0 && types_[id] == TokenType::kUserDefined) {
      trie_[node].user_token = id;
    }
  }

  eog_.assign(n, 0);
  if (eot_ < 0) {
    for (std::string_view t : kEotTexts) {
      if ((eot_ = Find(t)) >= 0) break;
    }
  }
  for (std::string_view t : kEogTexts) {
    const int32_t id = Find(t);
    if (id >= 0) eog_[id] = 1;
  }
  for (int32_t id : {eos_, eot_, eom_}) {
    if (id >= 0) eog_[id] = 1;
  }
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return std::string_view(text_arena_)
      .substr(text_off_[id], text_off_[id + 1] - text_off_[id]);
}

std::string_view Tokenizer::TokenBytes(int32_t id, bool special) const {
  if (id < 0 || id >= vocab_size()) return {};
  if (special && (types_[id] == TokenType::kControl ||
                  types_[id] == TokenType::kUnknown)) {
    return TokenText(id);
  }
  return std::string_view(piece_arena_)
      .substr(piece_off_[id], piece_off_[id + 1] - piece_off_[id]);
}

TokenType Tokenizer::type(int32_t id) const {
  return id < 0 || id >= vocab_size() ? TokenType::kUndefined : types_[id];
}

int32_t Tokenizer::Find(std::string_view text) const {
  auto it = ids_.find(text);
  return it == ids_.end() ? -1 : it->second;
}

bool Tokenizer::IsEog(int32_t id) const {
  return id >= 0 && id < vocab_size() && eog_[id];
}

std::string Tokenizer::Decode(std::span<const int32_t> ids,
                              bool special) const {
  std::string out;
  size_t strip_at = 0;  // the token whose leading space is the prefix
  if (model_ == Model::kLlama && !ids.empty() && ids[0] == bos_) strip_at = 1;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string_view p = TokenBytes(ids[i], special);
    if (i == strip_at && model_ == Model::kLlama && add_space_prefix_ &&
        !p.empty() && p[0] == ' ') {
      p.remove_prefix(1);
    }
    out += p;
  }
  return out;
}

void Tokenizer::Partition(std::string_view text, bool parse_special,
                          std::vector<Fragment>* frags) const {
  frags->clear();
  if (text.empty()) return;
  frags->push_back({-1, 0, static_cast<uint32_t>(text.size())});
  if (trie_[0].next.empty()) return;
  // Which special tokens occur at all (usually none).
  std::vector<int32_t> found;
  for (size_t i = 0; i < text.size(); ++i) {
    int32_t node = 0;
    for (size_t k = i; k < text.size(); ++k) {
      const auto b = static_cast<uint8_t>(text[k]);
      int32_t next = -1;
      for (const auto& [byte, child] : trie_[node].next) {
        if (byte == b) {
          next = child;
          break;
        }
      }
      if (next < 0) break;
      node = next;
      const int32_t id =
          parse_special ? trie_[node].token : trie_[node].user_token;
      if (id >= 0) found.push_back(id);
    }
  }
  if (found.empty()) return;
  std::sort(found.begin(), found.end(), [&](int32_t a, int32_t b) {
    return special_rank_[a] < special_rank_[b];
  });
  found.erase(std::unique(found.begin(), found.end()), found.end());
  // llama.cpp's partition: each token, the longest first, is cut out of
  // every text fragment, left to right.
  std::vector<Fragment> next;
  for (int32_t id : found) {
    const std::string_view t = TokenText(id);
    next.clear();
    for (const Fragment& f : *frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view s = text.substr(f.begin, f.end - f.begin);
      size_t pos = 0;
      for (size_t k; (k = s.find(t, pos)) != std::string_view::npos;) {
        if (k > pos) {
          next.push_back({-1, static_cast<uint32_t>(f.begin + pos),
                          static_cast<uint32_t>(f.begin + k)});
        }
        next.push_back({id, 0, 0});
        pos = k + t.size();
      }
      if (pos < s.size()) {
        next.push_back({-1, static_cast<uint32_t>(f.begin + pos), f.end});
      }
    }
    frags->swap(next);
  }
}

Status Tokenizer::Encode(std::string_view text, bool add_bos,
                         bool parse_special, std::vector<int32_t>* out) const {
  out->clear();
  if (text.size() > kMaxTextBytes) {
    return ResourceExhausted("text of %zu bytes; the limit is %zu", text.size(),
                             kMaxTextBytes);
  }
  if (add_bos) {
    if (bos_ < 0) return InvalidArgument("BOS asked for, but there is none");
    out->push_back(bos_);
  }
  Scratch s;
  Partition(text, parse_special, &s.frags);
  bool prev_special = true;
  for (size_t i = 0; i < s.frags.size(); ++i) {
    const Fragment f = s.frags[i];
    if (f.token >= 0) {
      out->push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view frag = text.substr(f.begin, f.end - f.begin);
    if (model_ == Model::kGpt2) {
      TERND_RETURN_IF_ERROR(EncodeGpt2(frag, &s, out));
    } else {
      EncodeLlama(frag, add_space_prefix_ && prev_special, &s, out);
      prev_special = false;
    }
  }
  return Status::Ok();
}

Status Tokenizer::EncodeGpt2(std::string_view text, Scratch* s,
                             std::vector<int32_t>* out) const {
  // Invalid UTF-8: each byte that does not start a valid sequence is read
  // as U+FFFD (llama.cpp), so PCRE2 only ever sees valid UTF-8.
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    const int len = Utf8SequenceLength(p + i, text.size() - i);
    if (len <= 0) break;
    i += len;
  }
  if (i < text.size()) {
    s->text.assign(text.substr(0, i));
    while (i < text.size()) {
      const int len = Utf8SequenceLength(p + i, text.size() - i);
      if (len > 0) {
        s->text.append(text.substr(i, len));
        i += len;
      } else {
        s->text.append(kReplacement);
        ++i;
      }
    }
    text = s->text;
  }

  if (s->md == nullptr) {
    s->md = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
    if (s->md == nullptr) return ResourceExhausted("out of memory for PCRE2");
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0, end = 0;  // the next search; the end of the last match
  while (pos < text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), pos,
                               PCRE2_NO_UTF_CHECK, s->md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // PCRE2's match, depth, heap or JIT stack limit: only runs of
      // megabytes can reach them.
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      return Errorf(StatusCode::kResourceExhausted,
                    "pre-tokenizer regex failed at byte %zu of %zu: %s", pos,
                    text.size(), reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s->md);
    const size_t m0 = ov[0], m1 = ov[1];
    if (m0 > end) EncodeWord(text.substr(end, m0 - end), s, out);
    if (m1 > m0) {
      EncodeWord(text.substr(m0, m1 - m0), s, out);
      pos = m1;
    } else {
      // An empty match (none of the supported regexes has one): step
      // over one character.
      pos = m1 + 1;
      while (pos < text.size() && (p[pos] & 0xC0) == 0x80) ++pos;
      continue;
    }
    end = m1;
  }
  if (end < text.size()) EncodeWord(text.substr(end), s, out);
  return Status::Ok();
}

void Tokenizer::EncodeWord(std::string_view word, Scratch* s,
                           std::vector<int32_t>* out) const {
  const auto* p = reinterpret_cast<const uint8_t*>(word.data());
  if (word.size() == 1) {
    out->push_back(byte_ids_[p[0]]);
    return;
  }
  if (ignore_merges_ && word.size() <= max_token_bytes_) {
    // The piece as byte characters: one or two bytes each.
    static const std::array<std::array<char, 3>, 256> kChars = [] {
      std::array<std::array<char, 3>, 256> t{};
      const std::array<uint32_t, 256> cps = ByteToCodepoint();
      for (int b = 0; b < 256; ++b) {
        std::string u;
        AppendUtf8(cps[b], &u);
        t[b][0] = static_cast<char>(u.size());
        t[b][1] = u[0];
        t[b][2] = u.size() > 1 ? u[1] : 0;
      }
      return t;
    }();
    s->word.clear();
    for (uint8_t b : word) s->word.append(&kChars[b][1], kChars[b][0]);
    const int32_t id = Find(s->word);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
  }
  const int32_t n = static_cast<int32_t>(word.size());
  auto& syms = s->syms;
  syms.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    syms[i] = {byte_ids_[p[i]], i - 1, i + 1 < n ? i + 1 : -1, 0, 0};
  }
  auto& heap = s->heap;
  heap.clear();
  const Scratch::BigramOrder order;
  auto add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint64_t key = static_cast<uint64_t>(syms[l].id) << 32 |
                         static_cast<uint32_t>(syms[r].id);
    auto it = merges_.find(key);
    if (it == merges_.end()) return;
    heap.push_back({-static_cast<float>(it->second.rank), l, r, syms[l].id,
                    syms[r].id, 0});
    std::push_heap(heap.begin(), heap.end(), order);
  };
  // Ranks beyond 2^24 would not be exact as floats: compare them exactly.
  static_assert(kMaxTokens <= (size_t{1} << 24));
  for (int32_t i = 0; i + 1 < n; ++i) add(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), order);
    const Scratch::Bigram b = heap.back();
    heap.pop_back();
    Scratch::Symbol& l = syms[b.left];
    Scratch::Symbol& r = syms[b.right];
    if (l.id != b.left_id || r.id != b.right_id || l.next != b.right) {
      continue;  // outdated
    }
    const uint64_t key =
        static_cast<uint64_t>(l.id) << 32 | static_cast<uint32_t>(r.id);
    l.id = merges_.find(key)->second.result;
    r.id = -1;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    add(l.prev, b.left);
    add(b.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out->push_back(syms[i].id);
}

void Tokenizer::EncodeLlama(std::string_view text, bool space_prefix,
                            Scratch* s, std::vector<int32_t>* out) const {
  std::string& t = s->text;
  t.clear();
  if (space_prefix) t.append(kSpaceMarker);
  for (char c : text) {
    if (c == ' ') {
      t.append(kSpaceMarker);
    } else {
      t.push_back(c);
    }
  }
  // Symbols: the UTF-8 characters, and each byte of invalid UTF-8 on its
  // own (it ends up as a byte token). llama.cpp takes as many bytes as a
  // lead byte announces without checking them, so that "\xFF " would
  // swallow the space; for valid UTF-8 the two are the same.
  auto& syms = s->syms;
  syms.clear();
  const auto* tp = reinterpret_cast<const uint8_t*>(t.data());
  for (size_t i = 0; i < t.size();) {
    const auto len = static_cast<size_t>(
        std::max(1, Utf8SequenceLength(tp + i, t.size() - i)));
    const auto k = static_cast<int32_t>(syms.size());
    syms.push_back(
        {0, k - 1, -1, static_cast<uint32_t>(i), static_cast<uint32_t>(len)});
    i += len;
  }
  const auto n = static_cast<int32_t>(syms.size());
  for (int32_t i = 0; i + 1 < n; ++i) syms[i].next = i + 1;
  auto& heap = s->heap;
  heap.clear();
  const Scratch::BigramOrder order;
  auto add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint32_t size = syms[l].len + syms[r].len;
    if (size > max_token_bytes_) return;
    const int32_t id = Find(std::string_view(t).substr(syms[l].begin, size));
    if (id < 0) return;
    heap.push_back({scores_[id], l, r, 0, 0, size});
    std::push_heap(heap.begin(), heap.end(), order);
  };
  for (int32_t i = 0; i + 1 < n; ++i) add(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), order);
    const Scratch::Bigram b = heap.back();
    heap.pop_back();
    Scratch::Symbol& l = syms[b.left];
    Scratch::Symbol& r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    add(l.prev, b.left);
    add(b.left, l.next);
  }
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = syms[i].next) {
    const std::string_view sym =
        std::string_view(t).substr(syms[i].begin, syms[i].len);
    const int32_t id = Find(sym);
    if (id >= 0) {
      out->push_back(id);
    } else {
      for (char c : sym) out->push_back(byte_ids_[static_cast<uint8_t>(c)]);
    }
  }
}

// ---------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool special)
    : tokenizer_(&tokenizer), special_(special) {
  // Input: up to 3 held bytes and a piece. Output: up to 3 bytes (U+FFFD)
  // per input byte.
  in_cap_ = tokenizer.max_piece_bytes() + sizeof held_bytes_;
  buf_ = std::make_unique<char[]>(in_cap_ * 4);
}

std::string_view StreamDecoder::Push(int32_t id) {
  const std::string_view piece = tokenizer_->TokenBytes(id, special_);
  char* in = buf_.get();
  char* out = in + in_cap_;
  std::memcpy(in, held_bytes_, held_);
  if (!piece.empty()) std::memcpy(in + held_, piece.data(), piece.size());
  const size_t m = held_ + piece.size();
  held_ = 0;
  size_t o = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(in);
  for (size_t i = 0; i < m;) {
    const int len = Utf8SequenceLength(p + i, m - i);
    if (len > 0) {
      std::memcpy(out + o, in + i, len);
      o += len;
      i += len;
    } else if (len < 0) {
      held_ = m - i;  // at most 3: the start of a longer sequence
      std::memcpy(held_bytes_, in + i, held_);
      break;
    } else {
      std::memcpy(out + o, kReplacement.data(), kReplacement.size());
      o += kReplacement.size();
      ++i;
    }
  }
  return std::string_view(out, o);
}

std::string_view StreamDecoder::Flush() {
  char* out = buf_.get() + in_cap_;
  size_t o = 0;
  for (size_t i = 0; i < held_; ++i) {
    std::memcpy(out + o, kReplacement.data(), kReplacement.size());
    o += kReplacement.size();
  }
  held_ = 0;
  return std::string_view(out, o);
}

}  // namespace ternd::tokenizer
