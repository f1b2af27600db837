"""The built-in trading desk: market hunter -> risk manager -> trade executor.

They talk through subscriptions, not hard-coded ids: the hunter's WHALE_ACTIVITY
and EXTREME_FUNDING reach every agent subscribed to those types, and the risk
manager's RISK_ASSESSMENT reaches every subscriber of that type, so the desk works
whatever ids its agents run under.
"""
