// Adding and removing recipients of an encrypted image without re-encrypting it: only the
// keys.jwe annotations of its encrypted layers (lazycrypt and ocicrypt alike) and so the manifests
// change; every layer blob and the config are copied as they are.
//
//  add:    the layer's privopts is unwrapped with one of `keys` and wrapped once more, one JWE per
//          new recipient (with its key id, see RecipientKeyId), appended to the annotation.
//          AlreadyExists when a new recipient is already named in a layer.
//  remove: the JWE entries whose key id names a removed recipient are dropped. `keys` must still
//          open the layer (so only a recipient can change recipients, and the layer is checked to
//          be sound first). FailedPrecondition when no recipient would remain; NotFound when a
//          removed recipient is not named by key id in a layer (JWEs written by ocicrypt carry no
//          key id: such recipients cannot be told apart without their private keys).
// Removing a recipient does not revoke what it could already read: anyone who pulled the image
// before keeps the layer keys. Rotate keys by re-encrypting when that matters.
//
// Thread-safety: independent calls; nothing shared.
#pragma once

#include <vector>

#include "common/status.h"
#include "image/convert.h"
#include "image/transport.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::image {

enum class RecipientChange { kAdd, kRemove };

struct RecipientsOptions {
  LayerCallback on_layer;  // after each layer ("recipients added", "recipients removed", "copied")
};

Result<ConvertReport> ChangeRecipients(ImageSource& src, ImageDestination& dst,
                                       const keywrap::KeyRing& keys,
                                       const std::vector<keywrap::PublicKey>& recipients,
                                       RecipientChange change, const RecipientsOptions& options = {});
Result<ConvertReport> ChangeRecipients(const ImageReference& src, const ImageReference& dst,
                                       const keywrap::KeyRing& keys,
                                       const std::vector<keywrap::PublicKey>& recipients,
                                       RecipientChange change, const RecipientsOptions& options = {});

// The keys.jwe value after the change, for one layer descriptor (the building block of the
// above; errors without a layer prefix).
Result<std::string> ChangeLayerRecipients(const Descriptor& layer,
                                          const keywrap::KeyRing& keys,
                                          const std::vector<keywrap::PublicKey>& recipients,
                                          RecipientChange change);

}  // namespace lazycrypt::image
