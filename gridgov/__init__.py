"""gridgov: grid governance and enforcement dispatch for a street (街道) command centre."""

__version__ = "0.1.0"
