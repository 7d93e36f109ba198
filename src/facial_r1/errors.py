"""The project's exceptions. Their messages name the file:line or sample id at fault;
the CLI prints them without a traceback and exits non-zero."""


class FacialR1Error(Exception):
    pass


class ImageError(FacialR1Error):
    """An image that cannot be used. `kind` says why, so a server can answer the right status:
    'not_image' (nothing PIL can identify), 'format' (a format not accepted), 'too_large'
    (over the pixel limit: a decompression bomb or just too big) or 'corrupt' (fails to decode)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind
