"""The real-time daemon: ports, clock, input router, recorder, scheduler, session, control,
telemetry."""
