"""Errors that stop a job before it starts (bad config, no input); row-level problems never raise."""


class JobInputError(ValueError):
    """The job's input or output location cannot be used; the message names it."""
