"""The evaluation harness: what a steering setting does to toxicity, fluency and general ability,
measured through a running gateway by an independent judge (`steergate eval`), and the tier
calibration and paper reruns built on it."""

__all__: list[str] = []
