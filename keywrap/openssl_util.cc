#include "keywrap/openssl_util.h"

#include <openssl/err.h>

namespace lazycrypt::keywrap::internal {

Status OpenSslError(std::string_view what) {
  unsigned long err = ERR_peek_error();
  std::string message = std::string(what) + " failed";
  if (err != 0) {
    char reason[256];
    ERR_error_string_n(err, reason, sizeof reason);
    message += ": ";
    message += reason;
  }
  ERR_clear_error();
  return Status::Internal(std::move(message));
}

void ClearOpenSslErrors() { ERR_clear_error(); }

}  // namespace lazycrypt::keywrap::internal
