import base64
import struct
import zlib
from pathlib import Path

import pytest

from agent.content import image_part, user_message, video_part
from agent.errors import UserError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tiny_png() -> bytes:
    """A valid 1x1 8-bit greyscale PNG."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00")  # filter byte + one pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def tiny_jpeg() -> bytes:
    """SOI, a JFIF APP0 segment and EOI: enough JPEG structure for type detection."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _decode(url: str) -> tuple[str, bytes]:
    header, _, payload = url.partition(",")
    assert header.startswith("data:") and header.endswith(";base64")
    return header[5:-7], base64.b64decode(payload)


# --- image_part ----------------------------------------------------------------------------------


def test_remote_url_passes_through():
    url = "https://zdkjdemo.oss-cn-shanghai.aliyuncs.com/dog_playing_with_sticks.jpg"
    assert image_part(url) == {"type": "image_url", "image_url": {"url": url}}
    assert image_part("HTTP://example.com/a.png")["image_url"]["url"] == "HTTP://example.com/a.png"


def test_data_url_passes_through():
    url = "data:image/png;base64,AAAA"
    assert image_part(url) == {"type": "image_url", "image_url": {"url": url}}


def test_local_png_becomes_data_url(tmp_path):
    data = tiny_png()
    part = image_part(_write(tmp_path, "pixel.png", data))
    assert part["type"] == "image_url"
    assert _decode(part["image_url"]["url"]) == ("image/png", data)


def test_type_comes_from_content_not_name(tmp_path):
    data = tiny_jpeg()
    part = image_part(str(_write(tmp_path, "photo.bin", data)))
    assert _decode(part["image_url"]["url"]) == ("image/jpeg", data)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"GIF89a" + b"\x00" * 10, "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 4, "image/webp"),
        (b"BM" + b"\x00" * 20, "image/bmp"),
        (b"II*\x00" + b"\x00" * 8, "image/tiff"),
        (b"MM\x00*" + b"\x00" * 8, "image/tiff"),
    ],
)
def test_magic_bytes(tmp_path, data, mime):
    part = image_part(_write(tmp_path, "img", data))
    assert _decode(part["image_url"]["url"])[0] == mime


def test_extension_fallback_for_unsniffed_type(tmp_path):
    part = image_part(_write(tmp_path, "shot.heic", b"\x00\x00\x00\x18ftypheic"))
    assert _decode(part["image_url"]["url"])[0] == "image/heic"


def test_unknown_type_is_refused(tmp_path):
    path = _write(tmp_path, "notes.txt", b"hello")
    with pytest.raises(UserError, match=r"unknown or unsupported type") as excinfo:
        image_part(path)
    assert "PNG" in str(excinfo.value) and str(path) in str(excinfo.value)


def test_no_extension_and_unknown_bytes_is_refused(tmp_path):
    with pytest.raises(UserError, match="unrecognised"):
        image_part(_write(tmp_path, "blob", b"\x00\x01\x02\x03"))


def test_mislabelled_file_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"named as image/png but its content is not"):
        image_part(_write(tmp_path, "fake.png", b"not a png at all"))


def test_oversize_image_is_refused_with_size_and_limit(tmp_path):
    path = _write(tmp_path, "big.png", tiny_png() + b"\x00" * 2000)
    size = path.stat().st_size
    with pytest.raises(UserError) as excinfo:
        image_part(path, max_bytes=1000)
    message = str(excinfo.value)
    assert f"{size:,} bytes" in message and "1,000 bytes" in message


def test_image_at_the_limit_is_accepted(tmp_path):
    data = tiny_png()
    path = _write(tmp_path, "exact.png", data)
    assert _decode(image_part(path, max_bytes=len(data))["image_url"]["url"])[1] == data


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(UserError, match="not found") as excinfo:
        image_part(missing)
    assert str(missing) in str(excinfo.value)


def test_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a file"):
        image_part(tmp_path)


# --- video_part ----------------------------------------------------------------------------------


def test_video_url():
    url = "https://cloud.video.taobao.com/vod/S8T54f_w1rkdfLdYjL3S5zKN9CrhkzuhRwOhF313tIQ.mp4"
    assert video_part(url) == {"type": "video_url", "video_url": {"url": url}}


def test_frame_list_matches_example_5():
    frames = [
        "https://img.alicdn.com/imgextra/i3/O1CN01K3SgGo1eqmlUgeE9b_!!6000000003923-0-tps-3840-2160.jpg",
        "https://img.alicdn.com/imgextra/i4/O1CN01BjZvwg1Y23CF5qIRB_!!6000000003000-0-tps-3840-2160.jpg",
    ]
    assert video_part(frames) == {"type": "video", "video": frames}
    assert video_part(tuple(frames)) == {"type": "video", "video": frames}


def test_local_frames_become_data_urls(tmp_path):
    png, jpeg = tiny_png(), tiny_jpeg()
    part = video_part(
        [_write(tmp_path, "f1.png", png), str(_write(tmp_path, "f2.jpg", jpeg)), "https://x/3.jpg"]
    )
    assert part["type"] == "video"
    first, second, third = part["video"]
    assert _decode(first) == ("image/png", png)
    assert _decode(second) == ("image/jpeg", jpeg)
    assert third == "https://x/3.jpg"


def test_local_video_file_is_refused(tmp_path):
    path = _write(tmp_path, "clip.mp4", b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(UserError, match="local video file"):
        video_part(path)
    with pytest.raises(UserError, match="local video file"):
        video_part(str(path))


def test_empty_frame_list_is_refused():
    with pytest.raises(UserError, match="empty"):
        video_part([])


def test_bad_frame_is_reported(tmp_path):
    with pytest.raises(UserError, match="not found"):
        video_part(["https://x/1.jpg", tmp_path / "missing.jpg"])


# --- user_message --------------------------------------------------------------------------------


def test_plain_text_message():
    assert user_message("你好") == {"role": "user", "content": "你好"}


def test_message_with_image_puts_text_last(tmp_path):
    data = tiny_png()
    message = user_message(
        "描述这张图片", images=["https://a/b.jpg", _write(tmp_path, "p.png", data)]
    )
    assert message["role"] == "user"
    remote, local, text = message["content"]
    assert remote == {"type": "image_url", "image_url": {"url": "https://a/b.jpg"}}
    assert _decode(local["image_url"]["url"]) == ("image/png", data)
    assert text == {"type": "text", "text": "描述这张图片"}


def test_single_image_source_is_not_iterated():
    message = user_message("what?", images="https://a/b.jpg")
    assert len(message["content"]) == 2
    assert message["content"][0]["image_url"]["url"] == "https://a/b.jpg"


def test_message_with_video_frames():
    message = user_message("描述这个视频的具体过程", video=["https://a/1.jpg", "https://a/2.jpg"])
    assert message["content"] == [
        {"type": "video", "video": ["https://a/1.jpg", "https://a/2.jpg"]},
        {"type": "text", "text": "描述这个视频的具体过程"},
    ]


def test_media_without_text():
    message = user_message(None, video="https://a/v.mp4")
    assert message["content"] == [{"type": "video_url", "video_url": {"url": "https://a/v.mp4"}}]


def test_empty_message_is_refused():
    with pytest.raises(UserError, match="needs text"):
        user_message(None)


def test_image_limit_applies_in_messages(tmp_path):
    path = _write(tmp_path, "p.png", tiny_png())
    with pytest.raises(UserError, match="over the limit"):
        user_message("x", images=[path], max_image_bytes=10)
