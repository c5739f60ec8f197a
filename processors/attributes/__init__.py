"""The attributes processor (actions on span, log record and data point attributes, with include/exclude
match properties); its actions are shared with the resource processor."""
