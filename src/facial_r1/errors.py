"""The one project exception. Its message names the file:line or sample id at fault;
the CLI prints it without a traceback and exits non-zero."""


class FacialR1Error(Exception):
    pass
