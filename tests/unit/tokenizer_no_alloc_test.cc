// Decoding during generation never touches the heap: TokenBytes, IsEog and
// StreamDecoder::Push/Flush, counted with the allocation hooks of
// tests/support/alloc_hooks.h (this binary's only includer).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"
#include "tests/support/alloc_hooks.h"

namespace ternd::tokenizer {
namespace {

using Counting = ::ternd::testing::AllocCounting;

// A llama vocabulary with byte fallback (so pieces split characters) and
// a few words.
std::unique_ptr<Tokenizer> Make() {
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
  for (const char* w :
       {"\xE2\x96\x81", "\xE2\x96\x81the", "\xE2\x96\x81m\xC3\xBC", "de",
        "\xE4\xBD\xA0\xE5\xA5\xBD", "\xE2\x96\x81\xF0\x9F\x98\x80"}) {
    d.tokens.push_back(w);
    d.token_types.push_back(1);
  }
  d.scores.assign(d.tokens.size(), 0.0f);
  d.unk = 0;
  d.bos = 1;
  d.eos = 2;
  auto t = Tokenizer::Create(d);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(TokenizerNoAllocTest, HooksAreLive) {
  Counting c;
  std::string* s = new std::string(100, 'x');
  delete s;
  EXPECT_GE(c.count(), 1);
}

TEST(TokenizerNoAllocTest, DecodingTokensAllocatesNothing) {
  std::unique_ptr<Tokenizer> t = Make();
  ASSERT_NE(t, nullptr);
  std::vector<int32_t> ids;
  const std::string text =
      "the m\xC3\xBC"
      "de \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80 x\xE2\x98\x83\xFF";
  ASSERT_TRUE(t->Encode(text, true, false, &ids).ok());
  ids.push_back(t->eos());
  StreamDecoder stream(*t);
  StreamDecoder special(*t, true);
  // What an uncounted pass gives, so the counted passes are checked to do
  // the work (a loop that did nothing would allocate nothing too).
  size_t want = 0;
  for (int32_t id : ids) want += stream.Push(id).size();
  want += stream.Flush().size();
  ASSERT_GT(want, text.size());  // " " prefix, U+FFFD for \xFF

  size_t got = 0, eog = 0, pieces = 0;
  {
    Counting c;
    for (int round = 0; round < 2000; ++round) {
      for (int32_t id : ids) {
        got += stream.Push(id).size();
        got += special.Push(id).size();
        pieces += t->TokenBytes(id).size() + t->TokenText(id).size();
        eog += t->IsEog(id);
      }
      got += stream.Flush().size();
      got += special.Flush().size();
      stream.Reset();
    }
    EXPECT_EQ(c.count(), 0);
  }
  EXPECT_GT(got, 2000 * want);
  EXPECT_EQ(eog, 2000u);
  EXPECT_GT(pieces, 0u);
}

}  // namespace
}  // namespace ternd::tokenizer
