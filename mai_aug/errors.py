"""The one error type the command line turns into a clear message and exit status 2."""


class MaiAugError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    The command line prints the message on one line and exits with status 2, without a traceback.
    """
