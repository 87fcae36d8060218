"""The hostile corpus itself: `corpus(seed, n)` draws `n` requests, the same ones for the same seed.

Every category is a function `(rng) -> HostileRequest` that starts from a small valid body (a chat or
text completion of at most a few tokens) and breaks one thing about it, so each request tests one
defence. The categories are drawn round-robin, so any prefix of the corpus covers all of them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CATEGORIES", "HostileRequest", "corpus"]

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
# HAProxy's buffer (Ray's tune.bufsize): a request head must fit in it.
HEADER_BUFFER_BYTES = 15_000
HAPROXY_MAX_HEADERS = 95  # tune.http.maxhdr is 101, with a few taken by the request's own
MODEL = "smollm2-135m-instruct"


@dataclass
class HostileRequest:
    category: str
    label: str  # what was broken, for the report
    body: bytes = b""
    method: str = "POST"
    path: str = CHAT
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("Content-Type", b"application/json")])
    # Raw head bytes that replace the generated ones (framing abuse); None: generated from the fields.
    head: bytes | None = None
    content_length: bool = True  # add a Content-Length header matching the body
    # Not valid HTTP/1.1 (header syntax, control bytes, conflicting framing, headers beyond HAProxy's
    # 16 KB buffer): refused by the front's HTTP parser, which may answer with its own 400 page.
    invalid_http: bool = False

    def raw(self, host: str) -> bytes:
        if self.head is not None:
            return self.head + self.body
        lines = [f"{self.method} {self.path} HTTP/1.1".encode(), b"Host: " + host.encode()]
        lines += [name.encode("latin-1") + b": " + value for name, value in self.headers]
        if self.content_length and self.method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(self.body)}".encode())
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


def _chat(rng: random.Random, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
                               "max_tokens": rng.choice([1, 2, 3]), "stream": rng.random() < 0.3}
    return body | extra


def _completion(rng: random.Random, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"model": MODEL, "prompt": "Hello", "max_tokens": rng.choice([1, 2, 3]),
                               "stream": rng.random() < 0.3}
    return body | extra


def _base(rng: random.Random) -> tuple[str, dict[str, object]]:
    return (CHAT, _chat(rng)) if rng.random() < 0.6 else (COMPLETIONS, _completion(rng))


def _invalid_header_value(value: bytes) -> bool:
    """Control bytes (NUL, CR, DEL) are not allowed in an HTTP/1.1 header value (RFC 9110 5.5)."""
    return any(b < 0x20 and b != 0x09 or b == 0x7F for b in value)


def _dump(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True, ensure_ascii=False).encode()


def _req(category: str, label: str, body: object | bytes, path: str = CHAT, **kw: object) -> HostileRequest:
    data = body if isinstance(body, bytes) else _dump(body)
    return HostileRequest(category, label, data, path=path, **kw)  # type: ignore[arg-type]


# ---- categories ---------------------------------------------------------------------------------

def broken_json(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    text = _dump(body)
    choice = rng.randrange(8)
    if choice == 0:
        return _req("broken_json", "truncated", text[: rng.randrange(1, len(text))], path)
    if choice == 1:
        return _req("broken_json", "random bytes", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))), path)
    if choice == 2:
        return _req("broken_json", "trailing comma", text[:-1] + b",}", path)
    if choice == 3:
        return _req("broken_json", "single quotes", text.replace(b'"', b"'"), path)
    if choice == 4:
        return _req("broken_json", "not an object", rng.choice([b"null", b"[]", b'"x"', b"123", b"true", b"[{}]"]), path)
    if choice == 5:
        return _req("broken_json", "empty body", b"", path)
    if choice == 6:
        return _req("broken_json", "BOM + comments", b"\xef\xbb\xbf/* c */" + text, path)
    return _req("broken_json", "two documents", text + text, path)


_WRONG = [None, True, False, 0, -1, 1.5, "", "x" * 10, [], {}, [1, "a"], {"a": {"b": []}}, "\u0000"]
_FIELDS = ["model", "messages", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stop", "seed",
           "logprobs", "top_logprobs", "stream_options", "steering", "presence_penalty", "logit_bias", "user",
           "response_format", "tools", "tool_choice", "max_completion_tokens", "echo", "best_of", "suffix"]


def wrong_types(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    name = rng.choice(_FIELDS)
    if rng.random() < 0.3 and path == CHAT:
        message = {"role": rng.choice(_WRONG + ["user"]), "content": rng.choice(_WRONG + ["hi"])}
        if rng.random() < 0.3:
            message = rng.choice(_WRONG)  # type: ignore[assignment]
        return _req("wrong_types", "message parts", body | {"messages": [message]}, path)
    value = rng.choice(_WRONG)
    return _req("wrong_types", f"{name}={json.dumps(value)[:20]}", body | {name: value}, path)


def huge_strings(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    size = rng.choice([10_000, 100_000, 400_000, 900_000, 2_000_000])
    big = rng.choice(["a", "é", "\u4e2d", "🙂", " ", "<|im_start|>"]) * (size // 4)
    where = rng.choice(["content", "model", "stop", "user", "key"])
    if where == "content":
        body = body | ({"messages": [{"role": "user", "content": big}]} if path == CHAT else {"prompt": big})
    elif where == "key":
        body = body | {big[:50_000]: 1}
    else:
        body = body | {where: big}
    return _req("huge_strings", f"{where} {size}", body, path)


def deep_nesting(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    depth = rng.choice([100, 1_000, 10_000, 100_000, 400_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"1" + closer * depth
    where = rng.choice(["body", "content", "steering", "stop", "unknown"])
    if where == "body":
        return _req("deep_nesting", f"whole body {depth}", nested, path)
    marker = _dump(body | {where if where != "content" else "messages": "@@"})
    return _req("deep_nesting", f"{where} {depth}", marker.replace(b'"@@"', nested), path)


def invalid_utf8(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    bad = rng.choice([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])
    if rng.random() < 0.5:
        # Lone surrogates are valid JSON escapes but not valid Unicode text.
        escape = rng.choice([b"\\ud800", b"\\udfff", b"\\ud83d", b"\\u0000"])
        target = b"Say hi." if path == CHAT else b"Hello"
        return _req("invalid_utf8", f"escape {escape.decode()}", _dump(body).replace(target, target + escape), path)
    text = _dump(body)
    i = rng.randrange(len(text))
    return _req("invalid_utf8", f"raw bytes {bad!r}", text[:i] + bad + text[i:], path)


_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e308", b"1e309", b"-1e309", b"-0", b"1e-400",
            str(10**40).encode(), str(-(10**40)).encode(), b"9223372036854775808", b"4294967296", b"0.5"]
_NUMERIC = ["max_tokens", "temperature", "top_p", "n", "seed", "logprobs", "top_logprobs", "presence_penalty",
            "frequency_penalty", "repetition_penalty", "min_tokens", "top_k", "max_completion_tokens"]


def odd_numbers(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    number = rng.choice(_NUMBERS)
    where = rng.choice(_NUMERIC + ["steering.strength", "steering.feature", "logit_bias"])
    if where.startswith("steering."):
        key = where.split(".")[1]
        spec = {"feature": 0, "mode": "add", "strength": 1.0} | {key: "@@"}
        body = body | {"steering": {"interventions": [spec]}}
    elif where == "logit_bias":
        body = body | {"logit_bias": {"1": "@@"}}
    else:
        body = body | {where: "@@"}
    return _req("odd_numbers", f"{where}={number.decode()}", _dump(body).replace(b'"@@"', number), path)


_UNKNOWN = {"policy": "strict", "tenant": "acme", "api_key": "sk-acme", "limits": {"requests_per_minute": 10**9},
            "priority": -100, "vllm_xargs": {"steergate": "x", "rid": "other"}, "request_id": "req-other",
            "kv_transfer_params": {"do_remote_prefill": True}, "cache_salt": "", "__proto__": {"admin": True},
            "safety": {"policy": "open"}, "x-steergate-policy": "open", "guided_json": {"type": "objec"},
            "structured_outputs": {"regex": "("}, "response_format": {"type": "json_schema"},
            "logits_processors": ["os.system"], "allowed_token_ids": [10**9], "bad_words": [""],
            "prompt_logprobs": 10**6, "truncate_prompt_tokens": -5, "mm_processor_kwargs": {"a": 1},
            "chat_template": "{{ 1/0 }}", "chat_template_kwargs": {"tokenize": True}, "add_generation_prompt": "no",
            "return_tokens_as_token_ids": "yes", "documents": [{"a": 1}], "tools": [{"type": "function"}]}


def unknown_fields(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    if rng.random() < 0.5:
        name = rng.choice(list(_UNKNOWN))
        return _req("unknown_fields", name, body | {name: _UNKNOWN[name]}, path)
    junk = {"".join(rng.choice("abcxyz_$.") for _ in range(rng.randrange(1, 12))): rng.choice(_WRONG)
            for _ in range(rng.randrange(1, 30))}
    return _req("unknown_fields", f"{len(junk)} random keys", body | junk, path)


def oversized(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    choice = rng.randrange(7)
    if choice == 0:
        n = rng.choice([9, 100, 10**6, 2**63])
        return _req("oversized", f"n={n}", body | {"n": n}, path)
    if choice == 1:
        m = rng.choice([2049, 10**6, 2**31, 2**63, 2**64])
        return _req("oversized", f"max_tokens={m}", body | {"max_tokens": m}, path)
    if choice == 2 and path == CHAT:
        count = rng.choice([1_000, 5_000, 20_000, 60_000])
        messages = [{"role": rng.choice(["user", "assistant"]), "content": "hi"} for _ in range(count)]
        return _req("oversized", f"{count} messages", body | {"messages": messages}, path)
    if choice == 3:
        count = rng.choice([5, 100, 10_000])
        return _req("oversized", f"{count} stop strings", body | {"stop": [f"s{i}" for i in range(count)]}, path)
    if choice == 4:
        count = rng.choice([301, 10_000, 50_000])
        return _req("oversized", f"logit_bias x{count}", body | {"logit_bias": {str(i): 1 for i in range(count)}}, path)
    if choice == 5:
        tokens = rng.choice([[10**9], [-1], list(range(5000)), [0] * 3000])
        return _req("oversized", f"token prompt x{len(tokens)} max {max(tokens)}",
                    _completion(rng, prompt=tokens), COMPLETIONS)
    top = rng.choice([21, 1000, 10**6])
    return _req("oversized", f"logprobs={top}", body | ({"logprobs": True, "top_logprobs": top} if path == CHAT
                                                        else {"logprobs": top}), path)


def malformed_steering(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    good = {"feature": 0, "mode": "add", "strength": 1.0}
    options: list[object] = [
        "strong", ["tier"], 1, None, {}, {"tier": "extreme"}, {"tier": "STRONG"}, {"tier": None},
        {"tier": "light", "interventions": [good]}, {"interventions": []}, {"interventions": [good] * 17},
        {"interventions": [good] * 10_000}, {"interventions": [good | {"feature": -1}]},
        {"interventions": [good | {"feature": 10**12}]}, {"interventions": [good | {"feature": 1.5}]},
        {"interventions": [good | {"feature": "0"}]}, {"interventions": [good | {"mode": "multiply"}]},
        {"interventions": [good | {"strength": "1"}]}, {"interventions": [good | {"vector": [1.0] * 576}]},
        {"interventions": [good | {"extra": 1}]}, {"interventions": [{"mode": "add"}]}, {"interventions": "all"},
        {"interventions": [good]}, {"interventions": [good | {"strength": 1e300}]}, {"gate": {"features": [1]}},
        {"tier": "light", "gate": None}, {"interventions": [None]}, {"interventions": [[0, "add", 1]]},
    ]
    value = rng.choice(options)
    return _req("malformed_steering", json.dumps(value)[:60], body | {"steering": value}, path)


def header_abuse(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    data = _dump(body)
    start = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
    end = b"Connection: close\r\n\r\n"
    choice = rng.randrange(12)
    cl = f"Content-Length: {len(data)}\r\n".encode()
    if choice == 0:
        size = rng.choice([1_000, 8_000, 20_000, 100_000])
        return _req("header_abuse", f"header of {size} bytes", data, path, head=start + cl + b"X-Big: " + b"a" * size
                    + b"\r\n" + end, invalid_http=size > HEADER_BUFFER_BYTES)
    if choice == 1:
        count = rng.choice([50, 200, 1000])
        many = b"".join(f"X-H{i}: v\r\n".encode() for i in range(count))
        return _req("header_abuse", f"{count} headers", data, path, head=start + cl + many + end,
                    invalid_http=count > HAPROXY_MAX_HEADERS)
    if choice == 2:
        return _req("header_abuse", "two Content-Lengths", data, path,
                    head=start + cl + f"Content-Length: {len(data) + 5}\r\n".encode() + end, invalid_http=True)
    if choice == 3:
        value = rng.choice([b"-1", b"abc", b"99999999999999999999", b"1e3", b" "])
        return _req("header_abuse", f"Content-Length {value!r}", data, path,
                    head=start + b"Content-Length: " + value + b"\r\n" + end, invalid_http=True)
    if choice == 4:
        return _req("header_abuse", "Content-Length longer than body", data, path,
                    head=start + f"Content-Length: {len(data) + 100}\r\n".encode() + end)
    if choice == 5:
        return _req("header_abuse", "Content-Length shorter than body", data, path,
                    head=start + f"Content-Length: {len(data) // 2}\r\n".encode() + end)
    if choice == 6:
        chunked = b"zz\r\n" + data + b"\r\n0\r\n\r\n"
        return _req("header_abuse", "bad chunk size", chunked, path, head=start + b"Transfer-Encoding: chunked\r\n" + end,
                    invalid_http=True)
    if choice == 7:
        chunked = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
        return _req("header_abuse", "chunked + Content-Length", chunked, path,
                    head=start + b"Transfer-Encoding: chunked\r\n" + cl + end)
    if choice == 8:
        value = rng.choice([b"\x00", b"caf\xe9", b"\xff\xfe", b"a\rb", b"\x7f"])
        return _req("header_abuse", f"header bytes {value!r}", data, path,
                    head=start + cl + b"X-Odd: " + value + b"\r\n" + end, invalid_http=_invalid_header_value(value))
    if choice == 9:
        return _req("header_abuse", "line without colon", data, path, head=start + cl + b"NoColonHere\r\n" + end,
                    invalid_http=True)
    if choice == 10:
        spoof = [("x-steergate-policy", b"open"), ("x-steergate-tenant", b"acme"), ("X-Forwarded-For", b"127.0.0.1"),
                 ("x-request-id", b"req-other"), ("x-steergate-arm", b"control"), ("X-Api-Key", b"sk-acme")]
        name, value = rng.choice(spoof)
        return _req("header_abuse", f"spoofed {name}", data, path,
                    headers=[("Content-Type", b"application/json"), (name, value)])
    return _req("header_abuse", "HTTP/1.0 without Host", data, path,
                head=f"POST {path} HTTP/1.0\r\n".encode() + b"Content-Type: application/json\r\n" + cl + end)


def content_types(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    data = _dump(body)
    options: list[tuple[bytes | None, bytes, str]] = [
        (b"text/plain", data, "text/plain"), (b"application/x-www-form-urlencoded", b"model=x&messages=y", "form"),
        (b"multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--zz--",
         "multipart"), (None, data, "no content type"),
        (b"application/json; charset=utf-16", json.dumps(body).encode("utf-16"), "utf-16 body"),
        (b"application/json; charset=utf-32", json.dumps(body).encode("utf-32"), "utf-32 body"),
        (b"application/xml", b"<xml/>", "xml"), (b"application/json\x00", data, "NUL in type"),
        (b"*/*", data, "*/*"), (b"application/json", b"\x1f\x8b\x08\x00garbage", "gzip bytes"),
    ]
    ctype, payload, label = rng.choice(options)
    headers = [] if ctype is None else [("Content-Type", ctype)]
    invalid = ctype is not None and _invalid_header_value(ctype)
    if label == "gzip bytes" or rng.random() < 0.1:
        headers.append(("Content-Encoding", b"gzip"))
        label += " + Content-Encoding gzip"
    return _req("content_types", label, payload, path, headers=headers, invalid_http=invalid)


def authorization(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    values = [b"", b"Bearer", b"Bearer ", b"Basic c2stcHVibGlj", b"bearer sk-public", b"Bearer sk-public extra",
              b"Bearer\tsk-public", b"Bearer " + b"k" * 10_000, b"Bearer " + b"k" * 200_000, b"Bearer \x00",
              b"Bearer caf\xe9", b"Bearer \xff\xfe\xfd", b"Token sk-acme", b"Bearer sk-acme\x00", b"sk-acme",
              b"Bearer sk-ACME", b"Bearer " + b"\xf0\x9f\x99\x82" * 100, b"Bearer ../../etc/passwd"]
    value = rng.choice(values)
    headers = [("Content-Type", b"application/json"), ("Authorization", value)]
    if rng.random() < 0.2:
        headers.append(("Authorization", b"Bearer sk-acme"))  # a second one
    return _req("authorization", f"{value[:30]!r} ({len(value)} bytes)", body, path, headers=headers,
                invalid_http=_invalid_header_value(value) or len(value) > HEADER_BUFFER_BYTES)


def methods_paths(rng: random.Random) -> HostileRequest:
    path, body = _base(rng)
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST", "TRACE"])
    odd = rng.choice([path, "/v1/chat/completions/", "/v1//completions", "/v1/chat/../completions", "/v2/chat",
                      "/v1/chat/completions?stream=true&n=100", "/%00", "/v1/models/../../metrics",
                      "/" + "a" * rng.choice([100, 5_000, 20_000]), "/v1/chat/completions%2F", "/health?x=1",
                      "/v1/embeddings", "/docs", "/openapi.json", "/metrics"])
    headers = [("Content-Type", b"application/json")]
    return HostileRequest("methods_paths", f"{method} {odd[:60]}", _dump(body), method=method, path=odd,
                          headers=headers, invalid_http=len(odd) > HEADER_BUFFER_BYTES or "%00" in odd)


CATEGORIES: dict[str, Callable[[random.Random], HostileRequest]] = {
    f.__name__: f for f in (broken_json, wrong_types, huge_strings, deep_nesting, invalid_utf8, odd_numbers,
                            unknown_fields, oversized, malformed_steering, header_abuse, content_types,
                            authorization, methods_paths)
}


def corpus(seed: int, n: int) -> list[HostileRequest]:
    """`n` requests, categories round-robin, each drawn from its own seeded generator."""
    rng = random.Random(seed)
    makers = list(CATEGORIES.values())
    return [makers[i % len(makers)](random.Random(rng.getrandbits(64))) for i in range(n)]

