"""Data: the FEA schema, SynFACS, the training mixture, the converters of the public data sets."""
