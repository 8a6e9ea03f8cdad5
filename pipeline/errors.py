"""The one exception type whose message is shown to users as a single line."""


class PipelineError(Exception):
    """Bad input or a failed check: the message says what is wrong and what to do."""
