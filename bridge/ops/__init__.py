"""Operations: Prometheus metrics, the scrape-time collector, logging, startup checks.

Metric hooks are called from every thread (the counters are thread-safe); the collector and
the ops queries run on the thread that serves a scrape or a status request; the checks run on
the CLI's thread (`ircbridge check-config --online`).
"""
