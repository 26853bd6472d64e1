"""Errors the runtime reports to the operator."""


class ConfigError(ValueError):
    """An invalid configuration value: names the flag (or option) and what is wrong with it."""

    def __init__(self, flag: str, problem: str) -> None:
        self.flag = flag
        self.problem = problem
        super().__init__(f"{flag}: {problem}")
