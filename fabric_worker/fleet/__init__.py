"""Fleet tools: the autoscaler and its actuators, ACL rules, ``fabric top``."""
