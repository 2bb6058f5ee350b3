# Strips gogoproto from containerd's API protos so protoc's C++ generator accepts them: the weak
# import, `option (gogoproto.x) = ...;` lines, and `(gogoproto.x) = v` entries inside `[...]`
# field/enum-value options (an option list left empty is removed with its brackets).
/^[[:space:]]*import[[:space:]]+weak[[:space:]]+"gogoproto\/gogo\.proto";/d
/^[[:space:]]*option[[:space:]]*\(gogoproto\.[A-Za-z_]+\)[[:space:]]*=.*;[[:space:]]*$/d
s/\(gogoproto\.[A-Za-z_]+\)[[:space:]]*=[[:space:]]*("[^"]*"|[A-Za-z0-9_.]+)[[:space:]]*,?[[:space:]]*//g
s/,[[:space:]]*\]/]/g
s/[[:space:]]*\[[[:space:]]*\]//g
