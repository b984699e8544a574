"""biotwin connectors: the twin served over OPC UA, the OPC UA ingest, the historian.

- :mod:`connectors.server`, :mod:`connectors.server_history`, :mod:`connectors.security`: the
  twin as an OPC UA server (ISA-95 address space, history, users and certificates).
- :mod:`connectors.ingest`: subscribes to any OPC UA server and stores into the historian.
- :mod:`connectors.historian`: append-only Parquet segments by day, queried with DuckDB.
- :mod:`connectors.receive`: ``biotwin receive``, the OPC UA server OT systems push into
  (writes, history updates, lab results; :mod:`connectors.receive_store` makes Good mean
  durable; docs/receive.md); :mod:`connectors.lab_results`: the lab results table.
- :mod:`connectors.pubsub_json`, :mod:`connectors.mqtt_receive`: OPC UA PubSub JSON over MQTT
  pushed into the historian (docs/pubsub-mqtt.md).
- :mod:`connectors.cli`, :mod:`connectors.opcua_cli`, :mod:`connectors.twin_import`: commands.

See docs/opcua.md and docs/historian.md.
"""
