// Note [Codec vocabulary]: one method enum with fixed wire values, one spec
// parser, one cast-kernel table, shared by the switch, the ops and the PS.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "compression/cast.h"
#include "compression/codec.h"
#include "compression/config.h"
#include "ps/wire.h"

namespace distx::compression {
namespace {

std::string errorOf(const std::string& spec) {
  try {
    parseSpec(spec, "SRC");
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(CodecVocabulary, WireValuesAreFixed) {
  EXPECT_EQ(static_cast<int>(Method::kNone), 0);
  EXPECT_EQ(static_cast<int>(Method::kFp16), 1);
  EXPECT_EQ(static_cast<int>(Method::kBf16), 2);
  EXPECT_EQ(static_cast<int>(Method::kTopK), 3);
  EXPECT_EQ(kMaxMethod, Method::kTopK);
  // The PS push codec is the method itself (the value travels in `aux`).
  EXPECT_EQ(static_cast<int>(ps::Codec::kTopK), 3);
  EXPECT_EQ(ps::codecDType(Method::kBf16), DType::kBFloat16);
}

TEST(CodecVocabulary, ParsesEverySpecAndNamesTheSource) {
  EXPECT_EQ(parseSpec("", "SRC").method, Method::kNone);
  EXPECT_EQ(parseSpec("none", "SRC").method, Method::kNone);
  EXPECT_EQ(parseSpec("off", "SRC").method, Method::kNone);
  EXPECT_EQ(parseSpec("fp16", "SRC").method, Method::kFp16);
  EXPECT_EQ(parseSpec("bf16", "SRC").method, Method::kBf16);
  const Spec t = parseSpec("topk:0.25", "SRC");
  EXPECT_EQ(t.method, Method::kTopK);
  EXPECT_DOUBLE_EQ(t.ratio, 0.25);
  EXPECT_EQ(parseSpec("topk:1", "SRC").ratio, 1.0);
  for (const char* bad : {"topk:0", "topk:2", "topk:", "topk:x", "topk:nan", "topk:inf"})
    EXPECT_NE(errorOf(bad).find("SRC: the top-k ratio must be a number in (0, 1]"),
              std::string::npos)
        << bad;
  for (const char* bad : {"int8", "FP16", "topk", "fp16:1"})
    EXPECT_NE(errorOf(bad).find("SRC must be one of fp16, bf16, topk:<ratio> or none; got"),
              std::string::npos)
        << bad;
  EXPECT_THROW(parseSpec("off", "SRC", /*allowOff=*/false), InvalidArgument);
  for (Method m : {Method::kNone, Method::kFp16, Method::kBf16})
    EXPECT_EQ(parseSpec(methodName(m), "SRC").method, m);
}

TEST(CodecVocabulary, TheSwitchParsesWithTheSameParser) {
  Fields opt, env;
  opt.compress = "topk:2";
  try {
    resolve(opt, env);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("pg_options.compress: the top-k ratio"), std::string::npos)
        << e.what();
  }
}

TEST(CodecVocabulary, CastTableAndCodecsAgree) {
  const std::vector<float> x = {1.5f, -2.25f, 65504.0f, 1e-8f, 3.0e38f};
  for (Method m : {Method::kFp16, Method::kBf16}) {
    const CastKernels& k = castKernels(m);
    std::vector<uint16_t> a(x.size()), b(x.size());
    const size_t overflow = k.encode(x.data(), a.data(), x.size(), 1.0f, defaultParallel());
    auto codec = makeCodec(m);
    EXPECT_STREQ(codec->name(), methodName(m));
    TensorState st;
    EXPECT_EQ(codec->encode(x.data(), x.size(), 1.0f, st, b.data()).overflow, overflow);
    EXPECT_EQ(a, b) << methodName(m);
    EXPECT_EQ(k.countNonFinite(a.data(), a.size(), defaultParallel()), overflow);
  }
  EXPECT_THROW(castKernels(Method::kTopK), InvalidArgument);
  EXPECT_THROW(castKernels(Method::kNone), InvalidArgument);
  EXPECT_THROW(makeCodec(Method::kNone), InvalidArgument);
  EXPECT_STREQ(makeCodec(Method::kTopK)->name(), "topk");
}

}  // namespace
}  // namespace distx::compression
