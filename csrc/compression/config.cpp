#include "compression/config.h"

#include <cmath>
#include <cstdlib>

#include "common/error.h"
#include "common/settings.h"

namespace distx {
namespace compression {
namespace {

// A field and the name to blame for it.
struct Picked {
  std::optional<std::string> value;
  std::string name;
};

// The option beats the variable (Note [Settings table]).
Picked pick(const std::optional<std::string>& option, const std::optional<std::string>& env,
            const char* optionName) {
  if (option) return {option, std::string("pg_options.") + optionName};
  return {env, settings::byOption(optionName).variable};
}

uint64_t parseCount(const Picked& p, uint64_t def, uint64_t max) {
  if (!p.value || p.value->empty()) return def;
  const std::string& v = *p.value;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  DISTX_CHECK(end && *end == '\0' && n >= 0 && static_cast<uint64_t>(n) <= max, InvalidArgument,
              p.name, " must be an integer in 0..", max, "; got '", v, "'");
  return static_cast<uint64_t>(n);
}

}  // namespace

const char* scopeName(Scope s) {
  return s == Scope::kAll ? "all" : "inter";
}

std::string Config::describe() const {
  if (!enabled()) return "off";
  std::string m = methodName(method);
  if (method == Method::kTopK) {
    m += ":" + detail::concat(ratio) + " ef=" + (errorFeedback ? "1" : "0");
  }
  return detail::concat(m, " min_bytes=", minBytes, " scope=", scopeName(scope),
                        logEvery ? detail::concat(" log_every=", logEvery) : std::string());
}

Config resolve(const Fields& options, const Fields& environment) {
  Config c;
  const Picked method = pick(options.compress, environment.compress, "compress");
  const Spec spec = parseSpec(method.value.value_or(""), method.name);
  c.method = spec.method;
  if (spec.method == Method::kTopK) c.ratio = spec.ratio;
  if (c.enabled()) c.source = method.name;

  const Picked ef = pick(options.errorFeedback, environment.errorFeedback, "compress_ef");
  if (ef.value && !ef.value->empty()) {
    const std::string& v = *ef.value;
    if (v == "1" || v == "true" || v == "True" || v == "on") {
      c.errorFeedback = true;
    } else if (v == "0" || v == "false" || v == "False" || v == "off") {
      c.errorFeedback = false;
    } else {
      throw InvalidArgument(ef.name + " must be 0 or 1; got '" + v + "'");
    }
  }
  c.minBytes = parseCount(pick(options.minBytes, environment.minBytes, "compress_min_bytes"),
                          c.minBytes, 1ull << 50);
  const Picked scope = pick(options.scope, environment.scope, "compress_scope");
  const std::string s = scope.value.value_or("");
  if (s.empty() || s == "inter") {
    c.scope = Scope::kInter;
  } else if (s == "all") {
    c.scope = Scope::kAll;
  } else {
    throw InvalidArgument(scope.name + " must be inter or all; got '" + s + "'");
  }
  c.logEvery =
      parseCount(pick(options.logEvery, environment.logEvery, "compress_log_every"), 0, 1ull << 40);
  return c;
}

}  // namespace compression
}  // namespace distx
