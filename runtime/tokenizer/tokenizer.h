// The tokenizer of ternd's language models: text to token ids (Encode) and
// token ids back to bytes (TokenBytes, Decode, StreamDecoder), compatible
// with llama.cpp for the vocabularies the supported BitNet b1.58 models use.
//
// Two kinds of vocabulary, named as GGUF's tokenizer.ggml.model names them:
//
//   "gpt2"   byte-level BPE (llama-3, Falcon3: BitNet b1.58 2B4T, Falcon3
//            1.58-bit). The text is split by the pre-tokenizer regex of
//            tokenizer.ggml.pre (run with PCRE2: "llama-bpe", "llama3",
//            "llama-v3" and "falcon3" are llama-3's regex; "gpt-2" is
//            GPT-2's), every byte of a piece becomes one of GPT-2's 256
//            byte characters, and adjacent symbols are merged by the rank
//            of tokenizer.ggml.merges (lowest first, leftmost of equal
//            ranks). With the llama-3 pre-tokenizers a piece that is a
//            token is taken whole, as llama.cpp and Hugging Face do.
//   "llama"  SentencePiece BPE (LLaMA 1/2; the 1bitLLM bitnet_b1_58
//            models): spaces become U+2581 ("▁"), a "▁" is put in front of
//            the text (add_space_prefix), adjacent symbols are merged into
//            the token of the highest score, and what is left unknown is
//            spelled with the byte tokens <0xNN>.
//
// Special tokens: with parse_special, the text of every control and
// unknown token in the input is taken as that token (the longest first,
// as llama.cpp does); user-defined tokens are always taken, as llama.cpp
// and Hugging Face do; without parse_special the text of a control token
// is tokenized as text like any other.
//
// Invalid UTF-8 (gpt2): every byte that does not start a valid UTF-8
// sequence is read as U+FFFD, as llama.cpp does, so such input does not
// survive a round trip; valid UTF-8 does: Decode(Encode(s)) == s. The
// llama model keeps every byte (byte fallback).
//
// Thread-safety: a Tokenizer is immutable after Create; Encode, Decode and
// TokenBytes may be called from any number of threads. A StreamDecoder
// belongs to one thread (one generation).
#ifndef TERND_RUNTIME_TOKENIZER_TOKENIZER_H_
#define TERND_RUNTIME_TOKENIZER_TOKENIZER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace ternd::tokenizer {

// GGUF's token types (tokenizer.ggml.token_type).
enum class TokenType : uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Limits Create enforces.
inline constexpr size_t kMaxTokens = size_t{1} << 24;
inline constexpr size_t kMaxTokenBytes = 4096;
// Encode refuses longer text (8 MiB: a prompt is a few kilobytes; within
// it no run of one character class reaches PCRE2's match limit).
inline constexpr size_t kMaxTextBytes = size_t{1} << 23;

// What a vocabulary file says, independent of the container (GGUF's
// tokenizer.ggml.* keys, or a .tern file).
struct TokenizerData {
  std::string model;  // "gpt2" or "llama"
  std::string
      pre;  // gpt2: "llama-bpe", "llama3", "llama-v3", "falcon3", "gpt-2"
  std::vector<std::string> tokens;
  std::vector<std::string> merges;   // gpt2: "a b", rank = index
  std::vector<float> scores;         // llama: one per token (empty: all 0)
  std::vector<int32_t> token_types;  // TokenType values (empty: all normal)
  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;
  bool add_bos = false;  // the model wants a BOS in front of a prompt
  bool add_eos = false;
  bool add_space_prefix = true;  // llama only
};

// Whether a model wants BOS when its file does not say (as llama.cpp
// decides): llama yes, gpt2 with a llama-3 pre-tokenizer yes, else no.
bool DefaultAddBos(std::string_view model, std::string_view pre);

// The pre-tokenizer names Create accepts for gpt2, comma-separated.
const char* SupportedPreTokenizers();

class Tokenizer {
 public:
  enum class Model { kGpt2, kLlama };

  // Checks `data` and builds the tables. Errors name what is wrong: the
  // model or pre-tokenizer, the index of a token or merge and what was
  // found, a missing byte token, an id out of range.
  static Result<std::unique_ptr<Tokenizer>> Create(const TokenizerData& data);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Replaces *out with the token ids of `text`, preceded by BOS when
  // `add_bos` (an error if the vocabulary has none; whether the model wants
  // one is add_bos()). Allocates (once per request, not per token).
  Status Encode(std::string_view text, bool add_bos, bool parse_special,
                std::vector<int32_t>* out) const;

  // The bytes token `id` stands for, as llama.cpp's token_to_piece gives
  // them: the decoded text of normal and byte tokens, the text of
  // user-defined tokens, and for control and unknown tokens their text
  // when `special`, else nothing; unused tokens and ids out of range give
  // nothing. A piece may be part of a UTF-8 sequence. Never allocates.
  std::string_view TokenBytes(int32_t id, bool special = false) const;
  // The token's string as the vocabulary stores it ("Ġthe", "▁the",
  // "<0x0A>", "<|eot_id|>"); empty for ids out of range.
  std::string_view TokenText(int32_t id) const;
  // The bytes of `ids` joined; for llama with add_space_prefix without the
  // space the encoder put in front (of the first token after a leading
  // BOS). For tests and tools; generation uses StreamDecoder.
  std::string Decode(std::span<const int32_t> ids, bool special = false) const;

  // The id of the token whose text is `text`, or -1.
  int32_t Find(std::string_view text) const;
  // End of generation: EOS, EOT, EOM and the control tokens llama.cpp
  // stops at by their text (<|eot_id|>, <|end_of_text|>, <|im_end|>, ...).
  bool IsEog(int32_t id) const;

  Model model() const { return model_; }
  const std::string& pre() const { return pre_; }
  int32_t vocab_size() const { return static_cast<int32_t>(types_.size()); }
  TokenType type(int32_t id) const;
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t eot() const { return eot_; }
  int32_t unk() const { return unk_; }
  int32_t pad() const { return pad_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  // The longest TokenBytes(id, true) of any token.
  size_t max_piece_bytes() const { return max_piece_bytes_; }

 private:
  struct Regex;  // the compiled PCRE2 pattern (tokenizer.cc)
  struct Scratch;
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct TrieNode {
    int32_t token = -1;       // the special token ending here
    int32_t user_token = -1;  // the user-defined one
    std::vector<std::pair<uint8_t, int32_t>> next;  // byte, node index
  };
  struct Fragment {
    int32_t token;  // -1: text [begin, end)
    uint32_t begin, end;
  };

  Tokenizer();
  Status Init(const TokenizerData& data);
  Status InitGpt2(const TokenizerData& data);
  Status InitLlama(const TokenizerData& data);
  void InitSpecials();
  void Partition(std::string_view text, bool parse_special,
                 std::vector<Fragment>* frags) const;
  Status EncodeGpt2(std::string_view text, Scratch* s,
                    std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view word, Scratch* s,
                  std::vector<int32_t>* out) const;
  void EncodeLlama(std::string_view text, bool space_prefix, Scratch* s,
                   std::vector<int32_t>* out) const;

  Model model_ = Model::kGpt2;
  std::string pre_;
  std::vector<TokenType> types_;
  std::vector<float> scores_;
  // Token strings and pieces, each in one arena: token i is
  // [off[i], off[i + 1]).
  std::string text_arena_, piece_arena_;
  std::vector<uint32_t> text_off_, piece_off_;
  std::unordered_map<std::string_view, int32_t> ids_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left << 32 | right)
  std::array<int32_t, 256> byte_ids_{};         // a byte's token (both models)
  bool ignore_merges_ = false;
  std::unique_ptr<Regex> regex_;
  // Special tokens, the longest first: the order Partition cuts them in,
  // and a byte trie to find which of them occur.
  std::vector<int32_t> special_rank_;  // by id; -1: not special
  std::vector<TrieNode> trie_;
  std::vector<uint8_t> eog_;  // by id
  int32_t bos_ = -1, eos_ = -1, eot_ = -1, eom_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = true;
  size_t max_token_bytes_ = 0;
  size_t max_piece_bytes_ = 0;
};

// Turns the pieces of successive token ids into complete UTF-8 text while
// a model generates: bytes of a character split across tokens are held
// until it is complete, and bytes that cannot become valid UTF-8 come out
// as U+FFFD (one per byte), so every returned view is valid UTF-8. The
// buffer is allocated by the constructor; Push and Flush never allocate.
class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder. `special`: control tokens give
  // their text (TokenBytes(id, true)).
  explicit StreamDecoder(const Tokenizer& tokenizer, bool special = false);

  // The text that token `id` completes; valid until the next call.
  std::string_view Push(int32_t id);
  // At the end of a stream: the held bytes of an unfinished character, as
  // U+FFFD each. Resets the decoder.
  std::string_view Flush();
  // Forgets held bytes (a new stream).
  void Reset() { held_ = 0; }
  // Bytes held back for the next Push (0 to 3).
  size_t held() const { return held_; }

 private:
  const Tokenizer* tokenizer_;
  bool special_;
  std::unique_ptr<char[]> buf_;  // input (held + piece), then output
  size_t in_cap_ = 0;
  char held_bytes_[4] = {};
  size_t held_ = 0;
};

// Length of the valid UTF-8 sequence at the start of [p, p + n): 1 to 4;
// 0 when the bytes there are not valid UTF-8 (a stray continuation byte,
// an overlong form, a surrogate, beyond U+10FFFF, a bad continuation); -1
// when they are the valid start of a sequence that `n` cuts short.
int Utf8SequenceLength(const uint8_t* p, size_t n);

}  // namespace ternd::tokenizer

#endif  // TERND_RUNTIME_TOKENIZER_TOKENIZER_H_
