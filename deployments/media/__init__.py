"""Safe media intake: client references -> decoded RGB images and sampled video frames.

Nothing a client sends is ever handed to PIL's or qwen-vl-utils' path / URL loaders (they open local
files and fetch any URL with no timeout). This package is the only place that turns a reference into
pixels, and it does so under explicit limits. No torch, no Ray: the functions are synchronous and meant
to run in worker threads.

Modules
    limits       MediaLimits (every cap and timeout), MediaError, and MediaBudget (one request's media allowance)
    addresses    the address policy: which hosts a fetch may connect to
    http_fetch   GET of an http(s) URL under the policy
    references   a reference string -> bytes (URL, data URI, base64); every other scheme is refused
    images       bytes / references -> RGB images
    video        bytes / references / frame lists -> sampled frames (Video)
    The decoded forms (Video, VideoSampling) are engine-level data: `deployments.engines.visual_inputs`.

References
    image   an ``https://`` / ``http://`` URL, a ``data:`` URI (base64), or bare base64.
    video   an URL or a ``data:`` URI / bare base64 of a video file (MP4/MOV, WebM/Matroska, AVI),
            or a list of frames, each an image reference as above.
    Any other scheme (``file://``, ``ftp://``, ...) and anything that is neither is refused.

API
    load_image(ref, *, limits=MediaLimits(), policy=PUBLIC_ONLY) -> PIL.Image.Image (RGB)
    load_video(ref, *, sampling=VideoSampling(), limits=..., policy=...) -> Video
    decode_image(data: bytes, limits) / decode_video(data: bytes, sampling, limits)   (bytes already in hand)
    fetch(url, *, max_bytes, limits, policy) -> bytes
    MediaBudget(limits, cancelled=..., deadline=...): pass the same one as `budget=` to every load_* call of
    one request: one deadline for all of its media (`request_media_deadline_s`), caps on its references
    (`max_media_items`) and bytes (`max_request_media_bytes`), and a stop between items and frames once
    `cancelled` (a threading.Event or a callable) says the caller is gone (MediaCancelled).
    Every failure raises MediaError(message); the message is safe to return to the client (the service
    answers 400 and names the input index). Any exception from a decoder on client bytes is a MediaError.

Fetching (URLs)
    http(s) only, no credentials in the URL, only ports in `allowed_ports` (80 and 443 by default); the
    host is resolved once and every resolved address must
    pass the AddressPolicy (PUBLIC_ONLY refuses loopback, private, link-local, shared, multicast,
    reserved, unspecified, IPv4-mapped / 6to4 / Teredo / NAT64 forms of those, and cloud metadata
    addresses); the connection goes to the address that was checked (the URL is pinned to the IP; the
    Host header and TLS SNI / certificate check keep the name), so DNS cannot change between check and
    connect. Every refusal of a host (blocked name, no such name, internal address, port not allowed) says
    the same words, so the fetcher is no name prober or port scanner. Redirects are followed by hand, at
    most `max_redirects`, each hop checked again. Connect and read timeouts, and an overall deadline that
    bounds every single network operation (slowly trickled headers and slow redirect chains included); no
    proxies from the environment; bodies read raw and only uncompressed (`identity`; a compressed answer
    is refused), under a byte cap enforced while streaming (Content-Length above the cap is refused before
    reading).

Images
    Pillow with a format allow-list (JPEG, PNG, WEBP, GIF (first frame), BMP). The pixel count is read
    from the header and checked before any pixel is decoded (decompression bombs); Pillow's own bomb
    guard is kept as a second line. Converted to RGB; transparent pixels are composited onto white (as
    qwen-vl-utils does for RGBA).

Videos
    PyAV with a container allow-list chosen by sniffing the bytes (so no other ffmpeg demuxer, such as
    HLS or concat, that could open further URLs or files is ever probed); caps on frame size, duration,
    decoded frames and decode time. Frames are sampled as qwen-vl-utils samples a video file: `fps`
    frames per second of video, at least `min_frames`, at most `max_frames`, an even count, indices
    round(linspace(0, total - 1, n)). A frame list is subsampled as the official Qwen3-VL recipe does
    (floor(linspace) down to `max_frames`) before any frame is fetched. Frames far larger than the model
    can use under the `total_pixels` budget (more than 4x its per-frame share) are reduced by an integer
    box filter while decoding, to bound memory; smaller frames are kept exactly as decoded, and the
    model's own resize happens in the engine.
"""

from deployments.engines.visual_inputs import Video, VideoSampling
from deployments.media.addresses import PUBLIC_ONLY, AddressPolicy, is_public_address
from deployments.media.http_fetch import fetch
from deployments.media.images import decode_image, load_image, to_rgb
from deployments.media.limits import DEFAULT_LIMITS, MediaBudget, MediaCancelled, MediaError, MediaLimits
from deployments.media.video import (
    DEFAULT_SAMPLING,
    decode_video,
    load_frames,
    load_video,
    num_sampled_frames,
    sample_frame_list,
    sample_indices,
    sniff_container,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_SAMPLING",
    "PUBLIC_ONLY",
    "AddressPolicy",
    "MediaBudget",
    "MediaCancelled",
    "MediaError",
    "MediaLimits",
    "Video",
    "VideoSampling",
    "decode_image",
    "decode_video",
    "fetch",
    "is_public_address",
    "load_frames",
    "load_image",
    "load_video",
    "num_sampled_frames",
    "sample_frame_list",
    "sample_indices",
    "sniff_container",
    "to_rgb",
]
