// Note [Settings table]
// Every setting distx reads, in one table: the torch_distx.Options field
// (pg_options) that sets it for one group, the DISTX_* environment variable,
// its type, default and help. A group setting (one with an option name) is
// resolved once, when the group is created: the option beats the variable,
// and a bad value raises ValueError naming where it came from
// ("pg_options.piece_bytes" or "DISTX_PIECE_BYTES"). Process settings
// (no option name) are read once per process (common/env.h). The same table
// feeds `python -m torch_distx.info`, torch_distx.Options' fields (a test
// keeps them equal) and the README's list.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace distx::settings {

struct Setting {
  const char* option;  // torch_distx.Options field; nullptr = environment only (process-wide)
  const char* variable;
  const char* type;  // for people: "auto | bytes", "0 | 1", ...
  const char* defaultValue;
  const char* help;
};

const std::vector<Setting>& table();
// The row of `option` (a group setting); InvalidArgument for an unknown name.
const Setting& byOption(const std::string& option);

// A value as the user gave it (nullopt: not given; an empty variable counts as
// not given, an empty option as given) and the name to blame in an error.
struct Given {
  std::optional<std::string> value;
  std::string source;
};

// What one group was given: the pg_options fields (as strings) over the
// environment. The constructor rejects option names the table does not know.
class GroupInput {
 public:
  explicit GroupInput(std::map<std::string, std::string> options);
  Given get(const char* option) const;
  // Only the options (no environment), for code that merges field by field.
  std::optional<std::string> option(const char* option) const;
  std::optional<std::string> variable(const char* option) const;

 private:
  std::map<std::string, std::string> options_;
};

// Parsers shared by the group and process settings. Each raises
// InvalidArgument naming g.source.
// "auto" (or unset) -> autoValue; else an integer in [min, max], or 0 when allowZero.
size_t parseBytes(const Given& g, size_t autoValue, size_t min, size_t max, bool allowZero);

}  // namespace distx::settings
