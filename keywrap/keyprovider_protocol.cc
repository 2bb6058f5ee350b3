// ocicrypt's key provider JSON protocol (keyprovider.h, keyprovider_protocol): the requests we
// send and the answers we parse. Separate from keyprovider.cc (the transports) so that it builds
// without gRPC: the fuzz build fuzzes the answer parsers.
#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "keywrap/base64.h"
#include "keywrap/json_util.h"
#include "keywrap/keyprovider.h"

namespace lazycrypt::keywrap {

using internal::WipedString;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// The JSON protocol

namespace keyprovider_protocol {
namespace {

// {"<name>":["<b64 params>"]}
std::string ParametersMap(const KeyProviderSpec& spec) {
  return "{" + json(spec.name).dump() + ":[\"" + Base64Encode(AsBytes(spec.params)) + "\"]}";
}

crypto::SecureBuffer ToSecure(WipedString& s) { return crypto::SecureBuffer(AsBytes(s.text)); }

Result<json> ParseObject(std::string_view text, std::string_view who) {
  auto parsed = internal::ParseJson(text, std::string(who) + " output");
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) return Status::Corruption(std::string(who) + " output: not a JSON object");
  return std::move(parsed).value();
}

// The base64 member `member` of object `outer`.`results`; Corruption naming what is missing.
Result<const json*> ResultMember(const json& root, std::string_view results, std::string_view member,
                                 std::string_view who) {
  auto r = root.find(std::string(results));
  const std::string where = std::string(who) + " output";
  if (r == root.end() || !r->is_object()) {
    return Status::Corruption(where + ": no \"" + std::string(results) + "\" object");
  }
  auto m = r->find(std::string(member));
  if (m == r->end() || m->is_null() || (m->is_string() && m->get_ref<const std::string&>().empty())) {
    return Status::Corruption(where + ": empty " + std::string(results) + "." + std::string(member));
  }
  if (!m->is_string()) {
    return Status::Corruption(where + ": " + std::string(results) + "." + std::string(member) +
                              " is not a base64 string");
  }
  return &*m;
}

}  // namespace

crypto::SecureBuffer WrapRequest(const KeyProviderSpec& spec, ByteSpan optsdata) {
  const std::string params = ParametersMap(spec);
  WipedString out;
  out.text.reserve(256 + params.size() + (optsdata.size() + 2) / 3 * 4);
  out.text += "{\"op\":\"keywrap\",\"keywrapparams\":{\"ec\":{\"Parameters\":";
  out.text += params;
  out.text += ",\"DecryptConfig\":{\"Parameters\":null}},\"optsdata\":\"";
  AppendBase64(out.text, optsdata);
  out.text += "\"},\"keyunwrapparams\":{\"dc\":null,\"annotation\":null}}";
  return ToSecure(out);
}

crypto::SecureBuffer UnwrapRequest(const KeyProviderSpec& spec, ByteSpan annotation_packet) {
  WipedString out;
  out.text = "{\"op\":\"keyunwrap\",\"keywrapparams\":{\"ec\":null,\"optsdata\":null},"
             "\"keyunwrapparams\":{\"dc\":{\"Parameters\":" +
             ParametersMap(spec) + "}" + ",\"annotation\":\"" + Base64Encode(annotation_packet) + "\"}}";
  return ToSecure(out);
}

Result<std::vector<uint8_t>> ParseWrapResponse(std::string_view text, std::string_view who) {
  LC_ASSIGN_OR_RETURN(json root, ParseObject(text, who));
  LC_ASSIGN_OR_RETURN(const json* member, ResultMember(root, "keywrapresults", "annotation", who));
  auto bytes = Base64Decode(member->get_ref<const std::string&>());
  if (!bytes.ok()) return bytes.status().WithContext(std::string(who) + " keywrapresults.annotation");
  return std::move(bytes).value();
}

Result<crypto::SecureBuffer> ParseUnwrapResponse(std::string_view text, std::string_view who) {
  LC_ASSIGN_OR_RETURN(json root, ParseObject(text, who));
  LC_ASSIGN_OR_RETURN(const json* member, ResultMember(root, "keyunwrapresults", "optsdata", who));
  auto bytes = Base64DecodeSecret(member->get_ref<const std::string&>());
  if (!bytes.ok()) return bytes.status().WithContext(std::string(who) + " keyunwrapresults.optsdata");
  return std::move(bytes).value();
}

Result<Request> ParseRequest(std::string_view text, std::string_view name) {
  auto parsed = internal::ParseJson(text, "key provider request");
  if (!parsed.ok()) return parsed.status();
  const json& root = *parsed;
  if (!root.is_object() || !root.contains("op") || !root["op"].is_string()) {
    return Status::Corruption("key provider request: no \"op\"");
  }
  Request request;
  request.op = root["op"].get<std::string>();
  const bool wrap = request.op == "keywrap";
  if (!wrap && request.op != "keyunwrap") {
    return Status::Unsupported("key provider request: unknown op " + internal::Quote(request.op));
  }
  const json params_parent = root.value(wrap ? "keywrapparams" : "keyunwrapparams", json());
  const json params_holder =
      params_parent.is_object() ? params_parent.value(wrap ? "ec" : "dc", json()) : json();
  if (params_holder.is_object() && params_holder.contains("Parameters") &&
      params_holder["Parameters"].is_object() && params_holder["Parameters"].contains(name)) {
    const json& list = params_holder["Parameters"][std::string(name)];
    if (!list.is_array()) return Status::Corruption("key provider request: parameters not a list");
    for (const json& p : list) {
      if (!p.is_string()) return Status::Corruption("key provider request: bad parameter");
      auto decoded = Base64Decode(p.get<std::string>());
      if (!decoded.ok()) return decoded.status().WithContext("key provider request parameter");
      request.params.emplace_back(AsStringView(*decoded));
    }
  }
  const json holder = root.value(wrap ? "keywrapparams" : "keyunwrapparams", json());
  const char* member = wrap ? "optsdata" : "annotation";
  if (!holder.is_object() || !holder.contains(member) || !holder[member].is_string()) {
    return Status::Corruption(std::string("key provider request: no ") + member);
  }
  auto payload = Base64DecodeSecret(holder[member].get_ref<const std::string&>());
  if (!payload.ok()) return payload.status().WithContext(std::string("key provider request ") + member);
  request.payload = std::move(payload).value();
  return request;
}

std::string WrapResponse(ByteSpan annotation_packet) {
  return "{\"keywrapresults\":{\"annotation\":\"" + Base64Encode(annotation_packet) +
         "\"},\"keyunwrapresults\":{\"optsdata\":null}}";
}

crypto::SecureBuffer UnwrapResponse(ByteSpan optsdata) {
  WipedString out;
  out.text.reserve(128 + (optsdata.size() + 2) / 3 * 4);
  out.text += "{\"keywrapresults\":{\"annotation\":null},\"keyunwrapresults\":{\"optsdata\":\"";
  AppendBase64(out.text, optsdata);
  out.text += "\"}}";
  return ToSecure(out);
}

}  // namespace keyprovider_protocol

}  // namespace lazycrypt::keywrap
