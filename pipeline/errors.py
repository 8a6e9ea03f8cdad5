"""The one exception type whose message is shown to users as a single line."""


class PipelineError(Exception):
    """Bad input or a failed check: the message says what is wrong and what to do."""


def message(err: BaseException) -> str:
    """An exception's own message. One raised in a DataLoader worker comes back from torch with the worker's
    traceback put in front of it (`Caught ... Original Traceback ...`): its last line is the original."""
    text = str(err).strip()
    if "\nOriginal Traceback" in text:
        text = text.rsplit("\n", 1)[-1].split(": ", 1)[-1]  # "pipeline.errors.PipelineError: <message>"
    return text


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = message(err)
    return text.splitlines()[0] if text else type(err).__name__
