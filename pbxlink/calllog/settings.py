"""The sections the call log reads: [thresholds] (too-long calls, the service level) and
[retention] (how long calls are kept)."""

from __future__ import annotations

from typing import Literal, get_args

from pbxlink.settings import Count, Days, Positive, Section

SlVariant = Literal["abandons_against", "abandons_ignored", "quick_abandons_succeed"]
SL_VARIANTS: tuple[SlVariant, ...] = get_args(SlVariant)


class Thresholds(Section):
    too_long_call_s: Positive = 1800.0  # talk time; the per-direction keys override it
    too_long_inbound_s: Positive | None = None
    too_long_outbound_s: Positive | None = None
    too_long_internal_s: Positive | None = None
    service_level_s: Positive = 20.0  # "answered within" (docs/metrics.md)
    short_abandon_s: Positive = 5.0  # callers who hung up this fast are not counted as offered
    service_level_variant: SlVariant = "abandons_against"

    def too_long_s(self, direction: str) -> float:
        """The talk time after which a call of this direction is too long."""
        own: float | None = getattr(self, f"too_long_{direction}_s", None)
        return self.too_long_call_s if own is None else own


class RetentionConfig(Section):
    calls_days: Days = 0  # 0: keep the call log forever
    recordings: bool = False  # also delete the recording files of the calls deleted
    batch: Count = 500  # rows per transaction, so the daemon's writes never wait long
