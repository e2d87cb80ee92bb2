"""Istio Mixer's gRPC API (``istio.mixer.v1.Mixer``).

Pure conversions: ``decode`` (requests -> bags: the lazy :class:`~mixerd.api.mixer_v1.decode.ProtoBag`,
Report decoding), ``encode`` (Check responses), ``client`` (what a client sends and reads back:
request encoding and response decoding, for ``mixerd check`` / ``mixerd report``), and ``wire``
(dictionary indices, errors and time conversions they share). ``service`` is the servicer.
"""
