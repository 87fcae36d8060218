"""Engine adapters: the model server talks to an engine through `Engine`; vLLM is the real one."""
