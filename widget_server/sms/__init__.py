"""SMS, the flows' second channel, at its foundation: encoding and segments, phone numbers, the
provider's Messages API, suppressions and consent. The parts that run with the email machinery
(SMS steps, the phone opt-in, the webhooks) are ``widget_server.mail.sms_*``."""
