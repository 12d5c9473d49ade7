// placeholder until the SIPp harness lands
