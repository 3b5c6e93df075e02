"""The gateway's routes, one module per resource, each a mixin of ``GatewayService``
(``gateway.service``). Every route declares itself on its ``@api`` decorator (``gateway.route``).
"""
