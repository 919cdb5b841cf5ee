// Tables indexed by an enum's value, in place of switch statements that map
// each enumerator to a name (or size): dtype.cpp, compression/method.cpp,
// ps/wire.cpp. Each table sits next to a static_assert that it has one row
// per enumerator; the rows follow the enum's order.
#pragma once

#include <cstddef>

namespace distx {

// table[value], or `fallback` for a value outside the table (a corrupt byte
// off the wire, a sentinel such as kCount_).
template <class T, size_t N, class E>
constexpr T enumLookup(const T (&table)[N], E value, T fallback) {
  const auto i = static_cast<size_t>(value);
  return i < N ? table[i] : fallback;
}

}  // namespace distx
