"""The one exception type the analysis core raises for problems a user can fix."""


class SaemiError(ValueError):
    """A problem with the input or the settings, with a message meant for the user.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands ("not an image file").
    code : str, optional
        A short machine-readable tag (``"not_an_image"``, ``"too_large"``,
        ``"bad_parameter"``, ...) that the web layers map to HTTP statuses.
    """

    def __init__(self, message, code="bad_input"):
        super().__init__(message)
        self.message = message
        self.code = code
