"""The multipart splitter: which parts are files."""

import pytest

from service.core.errors import BadImage
from service.inference.inputs import multipart_files

CT = "multipart/form-data; boundary=XyZ"


def body(*parts: tuple[str, bytes]) -> bytes:
    out = b""
    for head, content in parts:
        out += b"--XyZ\r\n" + head.encode("latin-1") + b"\r\n\r\n" + content + b"\r\n"
    return out + b"--XyZ--\r\n"


def test_file_parts_are_those_with_a_filename_or_an_image_type():
    data = body(('Content-Disposition: form-data; name="a"; filename="a.png"', b"A"),
                ('Content-Disposition: form-data; name="note"', b"text field"),
                ('Content-Disposition: form-data; name="filename=x"', b"a tricky name"),
                ('content-disposition: form-data; name="b"\r\ncontent-type: image/jpeg', b"B"),
                ("Content-Disposition: form-data; name=\"c\"; filename*=UTF-8''c.png", b"C"))
    assert multipart_files(data, CT) == [b"A", b"B", b"C"]


def test_malformed_bodies_are_bad_images():
    with pytest.raises(BadImage, match="boundary"):
        multipart_files(b"", "multipart/form-data")
    with pytest.raises(BadImage, match="malformed"):
        multipart_files(b"--XyZ\r\nno blank line--XyZ--", CT)
