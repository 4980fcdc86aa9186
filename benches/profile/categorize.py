#!/usr/bin/env python3
"""Attributes each perf sample of a server to one component, by the innermost frame of its
stack that names a known component; prints each component's share of the samples.

    perf record -F 1999 --call-graph dwarf,16384 -p <server pid> -o perf.data -- sleep 6
    perf script -i perf.data -F comm,tid,ip,sym | benches/profile/categorize.py

Used for the "what bounds it" breakdown of POST /v1/verify in docs/PERFORMANCE.md.
"""
import re
import sys
from collections import Counter

# (component, pattern); the first pattern that matches a frame, from the leaf outwards, wins.
COMPONENTS = [
    ("request logging (tracing fmt to stderr, spans)", r"tracing_subscriber|tower_http::trace|RequestSpan|tracing_core|sharded_slab"),
    ("request id (random + format)", r"request_id::RequestId::|getrandom|crng_|urandom_read|get_random"),
    ("metrics middleware", r"kms_server::metrics|prometheus_client|record_metrics::\{\{closure\}\}::\{\{closure\}\}"),
    ("kms-core (cached authenticate + verify + check)", r"kms_core::"),
    ("request body read + JSON parse", r"kms_server::extract|serde_json::de|http_body_util"),
    ("response JSON encode", r"serde_json::ser|VerifyResponse|axum::json|IntoResponse for axum::json"),
    ("security headers, CSP, etc.", r"SetResponseHeader|security_headers|HeaderMap.*insert|http::header::map"),
    ("axum/tower middleware plumbing (from_fn boxes, routing)", r"axum::middleware|tower::util|axum::routing|axum::util|boxed_clone|Box<dyn tower|matchit|axum::serve|MatchedPath|kms_server::middleware"),
    ("hyper write (writev syscall)", r"write_vectored|__GI___writev|do_writev"),
    ("hyper read + HTTP parse", r"hyper::proto::h1::role|poll_read|httparse|__libc_recv|sock_recvmsg|tcp_recvmsg|ksys_read"),
    ("hyper other", r"hyper::"),
    ("tokio scheduler, park/wake, epoll", r"tokio::runtime|mio::|epoll|futex|schedule|__x64_sys_futex"),
]
COMPILED = [(name, re.compile(p)) for name, p in COMPONENTS]


def classify(frames):
    for frame in frames:
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    if frames and re.search(r"malloc|free|realloc|memmove|memcpy", frames[0]):
        return "allocator/memcpy (unattributed)"
    return "other (kernel, unattributed)"


def samples(lines):
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line.startswith(("\t", " ")):
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if frames:
        yield frames


counts = Counter(classify(s) for s in samples(sys.stdin))
total = sum(counts.values())
for name, n in counts.most_common():
    print(f"{100.0 * n / total:5.1f} %  {name}")
print(f"{total} samples")
