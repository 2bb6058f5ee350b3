#include "zindex/zindex.h"

#include <gtest/gtest.h>
