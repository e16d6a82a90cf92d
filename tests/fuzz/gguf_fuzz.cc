// Fuzzes the GGUF importer: parse, the architecture and tensor-set checks,
// the typed metadata accessors and every decoder on whatever parses. Any
// crash, sanitizer report, leak or unbounded allocation is a bug; errors are
// the expected answer to garbage.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/gguf/gguf_arch.h"
#include "runtime/gguf/gguf_decode.h"
#include "runtime/gguf/gguf_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd::gguf;  // NOLINT
  auto file = GgufFile::Parse(std::vector<uint8_t>(data, data + size), "fuzz");
  if (!file.ok()) return 0;
  for (const KeyValue& kv : file->metadata()) {
    file->GetU32(kv.key).status().IgnoreError();
    file->GetF32(kv.key).status().IgnoreError();
    file->GetString(kv.key).status().IgnoreError();
    file->GetStringArray(kv.key).status().IgnoreError();
    file->GetIntArray(kv.key).status().IgnoreError();
    file->GetFloatArray(kv.key).status().IgnoreError();
  }
  ValidateModel(*file).status().IgnoreError();
  for (const TensorInfo& t : file->tensors()) {
    // Decoded tensors are at most ~8x the input's size (Q4_K to float).
    if (IsTernaryType(t.type)) DecodeTernary(t).status().IgnoreError();
    if (IsFloatDecodableType(t.type)) DecodeFloat(t).status().IgnoreError();
  }
  return 0;
}
