#include "image/layer.h"

#include <algorithm>

#include "crypto/ocicrypt_ctr.h"
#include "crypto/random.h"
#include "format/keys.h"
#include "format/layout.h"
#include "image/layout.h"
#include "keywrap/envelope.h"

namespace lazycrypt::image {

namespace {

// Forwards writes to `out` (not owned) and hashes them.
class HashingOutputStream final : public OutputStream {
 public:
  explicit HashingOutputStream(OutputStream& out) : out_(out) {}
  Status Write(ByteSpan data) override {
    LC_RETURN_IF_ERROR(out_.Write(data));
    sha_.Update(data);
    size_ += data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }  // does not close out_
  std::string Digest() { return crypto::OciDigest(sha_.Finish()); }
  uint64_t size() const { return size_; }

 private:
  OutputStream& out_;
  crypto::Sha256 sha_;
  uint64_t size_ = 0;
};


// The pubopts commitment must be the one in the blob's header (LayerIndex checks that the key
// derives the header's commitment; this checks the published one is the same).
Status CheckPublishedCommitment(const format::KeyCommitment& published,
                                const format::KeyCommitment& in_blob) {
  if (!crypto::ConstantTimeEquals(published, in_blob)) {
    return Status::AuthFailed("the key commitment in pubopts differs from the blob's");
  }
  return Status::Ok();
}

}  // namespace

Result<LazycryptEncryptResult> EncryptLazycryptLayer(
    InputStream& layer, OutputStream& blob, const keywrap::Recipients& recipients,
    const format::WriterOptions& options) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients (use --recipient)");
  LC_ASSIGN_OR_RETURN(format::LayerKey key, format::NewLayerKey());
  LC_ASSIGN_OR_RETURN(format::WriteResult written, format::WriteLayer(layer, key, blob, options));
  LC_ASSIGN_OR_RETURN(LazycryptAnnotations annotations,
                      MakeLazycryptAnnotations(key, written.toc_digest, written.key_commitment,
                                               recipients));
  LazycryptEncryptResult result;
  result.write = written;
  result.descriptor.media_type = std::string(kMediaTypeLazycryptLayer);
  if (options.hash_blob) result.descriptor.digest = crypto::OciDigest(written.blob_digest);
  result.descriptor.size = written.blob_size;
  if (!annotations.keys_jwe.empty()) {
    result.descriptor.annotations[std::string(kAnnotationEncKeysJwe)] = std::move(annotations.keys_jwe);
  }
  result.descriptor.annotations.insert(annotations.provider_keys.begin(),
                                       annotations.provider_keys.end());
  result.descriptor.annotations[std::string(kAnnotationEncPubopts)] = std::move(annotations.pubopts);
  result.descriptor.annotations[std::string(kAnnotationLazycryptTocDigest)] =
      std::move(annotations.toc_digest);
  result.descriptor.annotations[std::string(kAnnotationLazycryptTocSize)] =
      std::to_string(written.toc_size);
  return result;
}

Result<std::unique_ptr<OpenedLayer>> OpenedLayer::Open(
    std::unique_ptr<BlobSource> blob, const Descriptor& descriptor,
    const keywrap::KeyRing& keys) {
  std::unique_ptr<OpenedLayer> opened(new OpenedLayer());
  opened->blob_ = std::make_unique<CountingBlobSource>(std::move(blob));
  LC_ASSIGN_OR_RETURN(VerifiedLayerIndex verified,
                      OpenLayerIndex(*opened->blob_, descriptor, keys));
  LC_ASSIGN_OR_RETURN(opened->reader_,
                      format::LayerReader::Create(*opened->blob_, std::move(verified.index),
                                                  std::move(verified.opener)));
  opened->key_name_ = std::move(verified.key_name);
  return opened;
}

Result<LazycryptDecryptResult> DecryptLazycryptLayer(BlobSource& blob, const Descriptor& descriptor,
                                                     const keywrap::KeyRing& keys,
                                                     OutputStream& out,
                                                     format::DecryptOutput output) {
  if (ClassifyLayer(descriptor.media_type) != LayerKind::kLazycrypt) {
    return Status::InvalidArgument("media type '" + descriptor.media_type +
                                   "' is not a lazycrypt layer");
  }
  LC_ASSIGN_OR_RETURN(LazycryptLayerSecret secret, UnwrapLazycryptLayer(descriptor, keys));
  // The published commitment against the blob's (the footer holds a copy of the header).
  if (blob.size() < format::kFooterSize) {
    return Status::Corruption("blob of " + std::to_string(blob.size()) +
                              " bytes is too short for a lazycrypt layer");
  }
  format::FooterBytes footer_bytes{};
  LC_RETURN_IF_ERROR(blob.ReadAt(blob.size() - format::kFooterSize, footer_bytes));
  LC_ASSIGN_OR_RETURN(format::Footer footer, format::ParseFooter(footer_bytes, blob.size()));
  LC_RETURN_IF_ERROR(CheckPublishedCommitment(secret.commitment, footer.header.commitment));
  format::DecryptOptions options;
  options.output = output;
  LC_ASSIGN_OR_RETURN(crypto::Sha256Digest diff_id,
                      format::DecryptLayer(blob, secret.key, secret.toc_digest, out, options));
  return LazycryptDecryptResult{diff_id, secret.key_name, secret.toc_digest};
}

Result<Descriptor> EncryptOcicryptLayer(InputStream& plain, const Descriptor& original,
                                        OutputStream& out,
                                        const keywrap::Recipients& recipients) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients (use --recipient)");
  if (ClassifyLayer(original.media_type) != LayerKind::kPlain) {
    return Status::InvalidArgument("media type '" + original.media_type +
                                   "' is not a plain tar layer");
  }
  LC_ASSIGN_OR_RETURN(crypto::SecureBuffer key, crypto::RandomKey(crypto::kCtrKeySize));
  std::vector<uint8_t> nonce(crypto::kCtrNonceSize);
  LC_RETURN_IF_ERROR(crypto::RandomBytes(nonce));

  auto verifying = NewVerifyingInputStream(plain, original, "layer blob " + original.digest);
  HashingOutputStream hashed(out);
  LC_ASSIGN_OR_RETURN(auto encrypting,
                      crypto::NewCtrHmacEncryptingStream(hashed, key.span(), nonce));
  LC_RETURN_IF_ERROR(CopyStream(*verifying, *encrypting).status());
  LC_RETURN_IF_ERROR(encrypting->Close());
  LC_ASSIGN_OR_RETURN(crypto::Sha256Digest hmac, encrypting->hmac());

  keywrap::PrivateLayerOptions priv;
  priv.symkey = std::move(key);
  priv.digest = original.digest;
  priv.cipher_options["nonce"] = nonce;
  std::string keys_jwe;
  if (!recipients.public_keys().empty()) {
    LC_ASSIGN_OR_RETURN(keys_jwe, keywrap::WrapLayerKeys(priv, recipients.public_keys()));
  }
  std::map<std::string, std::string> provider_keys;
  if (!recipients.providers().empty()) {
    LC_ASSIGN_OR_RETURN(crypto::SecureBuffer privopts, keywrap::SerializePrivateLayerOptions(priv));
    LC_ASSIGN_OR_RETURN(provider_keys,
                        WrapPrivoptsForProviders(privopts.span(), recipients.providers()));
  }
  keywrap::PublicLayerOptions pub;
  pub.cipher = std::string(keywrap::kOcicryptAes256CtrCipher);
  pub.hmac.assign(hmac.begin(), hmac.end());
  LC_ASSIGN_OR_RETURN(std::string pubopts, keywrap::EncodePubOptsAnnotation(pub));

  Descriptor d;
  d.media_type = OciLayerMediaType(original.media_type) + std::string(kEncryptedSuffix);
  d.digest = hashed.Digest();
  d.size = hashed.size();
  d.annotations = WithoutEncryptionAnnotations(original.annotations);
  if (!keys_jwe.empty()) d.annotations[std::string(kAnnotationEncKeysJwe)] = std::move(keys_jwe);
  d.annotations.insert(provider_keys.begin(), provider_keys.end());
  d.annotations[std::string(kAnnotationEncPubopts)] = std::move(pubopts);
  d.extra_json = original.extra_json;
  return d;
}

Result<OcicryptLayerCipher> UnwrapOcicryptLayer(const Descriptor& encrypted,
                                                const keywrap::KeyRing& keys) {
  if (ClassifyLayer(encrypted.media_type) != LayerKind::kOcicrypt) {
    return Status::InvalidArgument("media type '" + encrypted.media_type +
                                   "' is not an ocicrypt layer");
  }
  std::string pubopts_text = encrypted.Annotation(kAnnotationEncPubopts);
  keywrap::PublicLayerOptions pub;
  if (!pubopts_text.empty()) {
    auto parsed = keywrap::DecodePubOptsAnnotation(pubopts_text);
    if (!parsed.ok()) return parsed.status().WithContext("annotation " + std::string(kAnnotationEncPubopts));
    pub = std::move(parsed).value();
  }
  if (pub.cipher != keywrap::kOcicryptAes256CtrCipher) {
    return Status::Unsupported("pubopts cipher '" + pub.cipher.substr(0, 64) +
                               "' is not supported (only " +
                               std::string(keywrap::kOcicryptAes256CtrCipher) + ")");
  }
  LC_ASSIGN_OR_RETURN(UnwrappedPrivopts unwrapped,
                      UnwrapLayerPrivopts(encrypted, keys));
  keywrap::PrivateLayerOptions& priv = unwrapped.options;
  if (!unwrapped.cipher.empty() && unwrapped.cipher != keywrap::kOcicryptAes256CtrCipher) {
    return Status::Unsupported("privopts cipher '" + unwrapped.cipher.substr(0, 64) +
                               "' does not match pubopts");
  }
  if (priv.symkey.size() != crypto::kCtrKeySize) {
    return Status::Corruption("privopts symkey is " + std::to_string(priv.symkey.size()) +
                              " bytes, not " + std::to_string(crypto::kCtrKeySize));
  }
  // ocicrypt looks options up in pubopts first, then privopts (LayerBlockCipherOptions.GetOpt).
  auto option = [&](const std::string& name) -> const std::vector<uint8_t>* {
    if (auto it = pub.cipher_options.find(name); it != pub.cipher_options.end()) return &it->second;
    if (auto it = priv.cipher_options.find(name); it != priv.cipher_options.end()) return &it->second;
    return nullptr;
  };
  const std::vector<uint8_t>* nonce = option("nonce");
  if (nonce == nullptr || nonce->size() != crypto::kCtrNonceSize) {
    return Status::Corruption("cipheroptions.nonce must be " + std::to_string(crypto::kCtrNonceSize) +
                              " bytes");
  }
  // Releases before the Hmac member existed put the HMAC in cipheroptions.
  const std::vector<uint8_t>* hmac = pub.hmac.empty() ? option("hmac") : &pub.hmac;
  if (hmac == nullptr || hmac->size() != crypto::kCtrHmacSize) {
    return Status::Corruption("pubopts hmac must be " + std::to_string(crypto::kCtrHmacSize) +
                              " bytes");
  }
  auto expected_digest = crypto::ParseOciDigest(priv.digest);
  if (!expected_digest.ok()) return expected_digest.status().WithContext("privopts digest");

  OcicryptLayerCipher out;
  out.nonce = *nonce;
  out.hmac = *hmac;
  out.key = std::move(priv.symkey);
  out.original.media_type = StripEncryptedSuffix(encrypted.media_type);
  out.original.digest = priv.digest;
  out.original.size = encrypted.size;  // CTR: ciphertext and plaintext have the same length
  out.original.annotations = WithoutEncryptionAnnotations(encrypted.annotations);
  out.original.extra_json = encrypted.extra_json;
  out.key_name = unwrapped.key_name;
  return out;
}

namespace {

// The encrypted blob verified (digest, size), decrypted and MAC-checked, the plaintext verified.
class OcicryptDecryptingStream final : public InputStream {
 public:
  Result<size_t> Read(MutableByteSpan out) override { return plain_->Read(out); }

  std::unique_ptr<InputStream> encrypted_;  // order matters: each reads from the one before
  std::unique_ptr<InputStream> decrypting_;
  std::unique_ptr<InputStream> plain_;
};

}  // namespace

Result<std::unique_ptr<InputStream>> NewOcicryptDecryptingStream(
    InputStream& in, const Descriptor& encrypted, const OcicryptLayerCipher& cipher) {
  auto stream = std::make_unique<OcicryptDecryptingStream>();
  stream->encrypted_ = NewVerifyingInputStream(in, encrypted, "encrypted blob " + encrypted.digest);
  LC_ASSIGN_OR_RETURN(stream->decrypting_,
                      crypto::NewCtrHmacDecryptingStream(*stream->encrypted_, cipher.key.span(),
                                                         cipher.nonce, cipher.hmac));
  stream->plain_ = NewVerifyingInputStream(*stream->decrypting_, cipher.original,
                                           "decrypted layer (privopts digest)");
  return std::unique_ptr<InputStream>(std::move(stream));
}

Result<OcicryptDecryptResult> DecryptOcicryptLayer(InputStream& in, const Descriptor& encrypted,
                                                   OutputStream& out,
                                                   const keywrap::KeyRing& keys) {
  LC_ASSIGN_OR_RETURN(OcicryptLayerCipher cipher, UnwrapOcicryptLayer(encrypted, keys));
  auto verifying = NewVerifyingInputStream(in, encrypted, "encrypted blob " + encrypted.digest);
  LC_ASSIGN_OR_RETURN(auto decrypting,
                      crypto::NewCtrHmacDecryptingStream(*verifying, cipher.key.span(),
                                                         cipher.nonce, cipher.hmac));
  HashingOutputStream hashed(out);
  LC_RETURN_IF_ERROR(CopyStream(*decrypting, hashed).status());
  std::string actual = hashed.Digest();
  if (actual != cipher.original.digest) {
    return Status::AuthFailed("decrypted layer has digest " + actual + ", privopts says " +
                              cipher.original.digest);
  }
  OcicryptDecryptResult result;
  result.original = std::move(cipher.original);
  result.original.size = hashed.size();
  result.key_name = cipher.key_name;
  return result;
}

Result<VerifiedLayerIndex> OpenLayerIndex(BlobSource& blob, const Descriptor& descriptor,
                                          const keywrap::KeyRing& keys,
                                          format::TailReadOptions tail,
                                          const format::TocLimits& limits) {
  if (ClassifyLayer(descriptor.media_type) != LayerKind::kLazycrypt) {
    return Status::InvalidArgument("media type '" + descriptor.media_type +
                                   "' is not a lazycrypt layer");
  }
  if (blob.size() != descriptor.size) {
    return Status::Corruption("blob has " + std::to_string(blob.size()) +
                              " bytes, its descriptor says " + std::to_string(descriptor.size));
  }
  LC_ASSIGN_OR_RETURN(LazycryptLayerSecret secret, UnwrapLazycryptLayer(descriptor, keys));
  VerifiedLayerIndex out;
  if (tail.toc_size_hint == 0) {
    // Unauthenticated, like every annotation: only how much the first read asks for.
    const std::string hint = descriptor.Annotation(kAnnotationLazycryptTocSize);
    if (!hint.empty() && hint.size() <= 19 &&
        hint.find_first_not_of("0123456789") == std::string::npos) {
      tail.toc_size_hint = std::stoull(hint);
    }
  }
  LC_ASSIGN_OR_RETURN(out.index, format::LayerIndex::Open(blob, secret.key, secret.toc_digest,
                                                          limits, tail));
  LC_RETURN_IF_ERROR(CheckPublishedCommitment(secret.commitment, out.index->header().commitment));
  LC_ASSIGN_OR_RETURN(out.opener, format::ChunkOpener::Create(secret.key, out.index->header()));
  out.key_name = secret.key_name;
  return out;
}

}  // namespace lazycrypt::image
