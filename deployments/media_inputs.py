"""Client media references -> decoded inputs for a multimodal engine, with every failure naming its input.

Client strings (URLs, data URIs, base64) are decoded here by the media package under its address policy and
byte, pixel and frame caps; only decoded images and frames reach the engine. All the media of one request
share one budget (media.MediaBudget): one deadline, a cap on references and on bytes, and a stop between
items once the caller is gone, so that one request of many slow references cannot hold a prep thread for long.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from deployments import media
from deployments.engines.visual_inputs import VLItem
from deployments.errors import Cancelled, InvalidRequest

_KINDS = ("image", "video")


def decode_item(
    content: dict,
    where: str,
    sampling,
    instruction: str | None = None,
    *,
    budget: media.MediaBudget | None = None,
) -> VLItem:
    """One {text?, image?, video?, instruction?} -> VLItem; a bad image or video is a 400 naming it.

    Pass the request's `budget` (see `request_budget`) so that all of its items share one; without one, this
    item gets a budget of its own.
    """
    budget = budget if budget is not None else media.MediaBudget()
    images, videos = (), ()
    for kind in _KINDS:
        ref = content.get(kind)
        if ref is None:
            continue
        try:
            budget.check()
            budget.take_item()
            if kind == "image":
                images = (media.load_image(ref, budget=budget),)
            else:
                videos = (media.load_video(ref, sampling=sampling, budget=budget),)
        except media.MediaCancelled:
            raise Cancelled("The request was cancelled.") from None
        except media.MediaError as exc:
            raise InvalidRequest(f"{where}.{kind}: {exc}", param=f"{where}.{kind}", code="invalid_media") from None
    return VLItem(
        text=content.get("text"), images=images, videos=videos, instruction=content.get("instruction") or instruction
    )


def request_budget(
    cancelled: media.limits.CancelSignal | None = None,
    deadline: float | None = None,
    limits: media.MediaLimits = media.DEFAULT_LIMITS,
) -> media.MediaBudget:
    """One request's media budget. `cancelled`: a threading.Event (or callable) set once the caller is gone;
    `deadline`: the call's own deadline in time.time() seconds (EmbedCall.deadline), if it has one."""
    until = None if deadline is None else time.monotonic() + (deadline - time.time())
    return media.MediaBudget(limits, cancelled=cancelled, deadline=until)


def decode_contents(
    contents: Sequence[tuple[str, dict]],
    sampling,
    instruction: str | None = None,
    *,
    cancelled: media.limits.CancelSignal | None = None,
    deadline: float | None = None,
    limits: media.MediaLimits = media.DEFAULT_LIMITS,
) -> list[VLItem]:
    """(where, content) pairs of one request -> VLItems, under one request-wide budget.

    The count of references is checked before anything is fetched; see `request_budget` for the arguments.
    """
    _check_count(contents, limits)
    budget = request_budget(cancelled, deadline, limits)
    return [decode_item(content, where, sampling, instruction, budget=budget) for where, content in contents]


def decode_items(
    items: list[dict],
    instruction: str | None,
    engine,
    param: str,
    *,
    cancelled: media.limits.CancelSignal | None = None,
    deadline: float | None = None,
) -> list[VLItem]:
    """The `input` items of one embedding request -> VLItems, all under one request-wide media budget."""
    sampling = engine.video_sampling()
    contents = [(f"{param}[{i}]", content) for i, content in enumerate(items)]
    return decode_contents(contents, sampling, instruction, cancelled=cancelled, deadline=deadline)


def _check_count(contents: Sequence[tuple[str, dict]], limits: media.MediaLimits) -> None:
    """Refuse a request with too many references up front, naming the first one over the cap."""
    seen = 0
    for where, content in contents:
        for kind in _KINDS:
            if isinstance(content, dict) and content.get(kind) is not None:
                seen += 1
                if seen > limits.max_media_items:
                    raise InvalidRequest(
                        f"{where}.{kind}: the request has more than {limits.max_media_items} images and videos "
                        "(the limit for one request)",
                        param=f"{where}.{kind}",
                        code="too_many_media",
                    )
