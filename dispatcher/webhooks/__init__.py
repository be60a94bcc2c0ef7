"""Callbacks: signed webhooks for runs that carry Comflowy's ``callback_urls``.

An event of such a run (``dispatcher.events``) is relayed from ``keys.WEBHOOK_EVENTS``
(:mod:`.relay`) into a delivery on its own RQ queue; the job (:mod:`.job`) signs it
(:mod:`.signing`, Standard Webhooks), POSTs it through ``dispatcher.safehttp``, records
the attempt (:mod:`.deliveries`) and schedules the next one on failure
(:mod:`.schedule`), until it is delivered or ``webhook_retry_for`` has passed.
``comfy-dispatch webhooks`` (:mod:`.main`) runs the relay and the worker.
"""
