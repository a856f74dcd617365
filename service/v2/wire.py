"""The protocol's request and response bodies on the wire, with the binary tensor data
extension: a JSON header whose length is in ``Inference-Header-Content-Length``,
followed by the raw bytes of the binary tensors in order (``binary_data_size`` each).

A request body is JSON whatever its Content-Type (the Triton clients send none, or
``application/octet-stream`` with binary tensors); it is read here, not by FastAPI's
body parsing, because binary tensors follow the JSON.
"""

from __future__ import annotations

import orjson
from fastapi import Response
from pydantic import ValidationError

from aae.errors import InvalidInput
from service.v2.schemas import InferenceRequest

HEADER_LENGTH = "Inference-Header-Content-Length"


def parse_request(body: bytes, header_length: str | None
                  ) -> tuple[InferenceRequest, dict[str, bytes]]:
    """The request and the raw bytes of each binary input, by input name."""
    if header_length is None:
        size = len(body)
    elif header_length.isdigit() and int(header_length) <= len(body):
        size = int(header_length)
    else:
        raise InvalidInput(f"{HEADER_LENGTH} must be the JSON header's length in bytes "
                           f"(at most the body's {len(body)}), got {header_length!r}")
    try:
        request = InferenceRequest.model_validate_json(body[:size])
    except ValidationError as exc:
        raise InvalidInput("; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False))) from None
    except (ValueError, RecursionError) as exc:  # e.g. JSON nested past the parser's depth
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    binary, offset = {}, size
    for tensor in request.inputs:
        length = (tensor.parameters or {}).get("binary_data_size")
        if length is None:
            continue
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise InvalidInput(f"input {tensor.name!r}: binary_data_size must be a byte count")
        if offset + length > len(body):
            raise InvalidInput(f"input {tensor.name!r}: binary_data_size {length} runs past "
                               f"the end of the body")
        binary[tensor.name] = body[offset:offset + length]
        offset += length
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes after the JSON header belong to no "
                           "input's binary_data_size")
    return request, binary


def response(payload: dict, chunks: list[bytes]) -> Response:
    """JSON alone, or the JSON header and the binary outputs after it."""
    header = orjson.dumps(payload)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})
