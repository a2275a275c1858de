"""Pure rules: names, permissions and the text conversions, decided without any I/O.

Any thread may call them: nothing here keeps state, opens a socket or touches the database.
import-linter keeps this package free of every other part of the bridge and of I/O libraries.
"""
