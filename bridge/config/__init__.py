"""Configuration: config.ini read into frozen dataclasses, its reference, the registration.

Loaded once on the main thread (the CLI or `create_app`); the dataclasses are frozen, so every
thread may read them after. Token filling, the registration file and the secret files are the
only writers here (run by the CLI's commands).
"""
