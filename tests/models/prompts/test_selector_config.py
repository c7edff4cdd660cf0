from __future__ import annotations

import json

from ovseg.models.prompts import SasPSelector, TopKPeakSelector
from ovseg.models.prompts.selector_config import selector_config
from ovseg.registry import POINT_SELECTORS


def test_a_built_selector_becomes_the_config_that_rebuilds_it():
    selector = SasPSelector(compat="read", down_sample=1, t_pos=0.95)
    config = selector_config(selector)
    # only what differs from the defaults, arguments in name order: stable bytes in config.json
    assert json.dumps(config) == (
        '{"type": "SasPSelector", "compat": "read", "down_sample": 1, "t_pos": 0.95}'
    )
    rebuilt = POINT_SELECTORS.build(config)
    assert vars(rebuilt) == vars(selector)
    assert selector_config(SasPSelector()) == {"type": "SasPSelector"}
    peaks = TopKPeakSelector(k=5, radius=1.5)
    assert vars(POINT_SELECTORS.build(selector_config(peaks))) == vars(peaks)


def test_selectors_whose_settings_cannot_be_read_back_give_none():
    class Unregistered(SasPSelector):
        pass

    class Hidden:
        def __init__(self, strength: float = 1.0) -> None:
            self._strength = strength

    assert selector_config(None) is None
    assert selector_config(Unregistered()) is None
    assert selector_config(Hidden()) is None
