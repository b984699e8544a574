"""The one place where ``biotwin receive`` takes over services of asyncua's server.

asyncua's server answers a Write from its address space (``InternalSession.write`` ->
``AttributeService.write``), with one code per value that says only whether the attribute
was set, and its PreWrite / PostWrite callbacks see a whole request, not a value; it has no
HistoryUpdate service (``UaProcessor._process_message`` answers BadServiceUnsupported); a
method callback does not know the session's user. The receiver needs each value checked,
made durable and answered with its own StatusCode, HistoryUpdate per OPC UA Part 11, and
the user for every operation. So for three request types, and only for sessions of
a :class:`connectors.receive.ReceiveServer`, :class:`ReceiveProcessor` routes the decoded
request to the receiver (``iserver.receiver``):

=================== =================================================================
WriteRequest        ``receiver.write(session, values)`` -> [StatusCode], the values as
                    :func:`connectors.receive_decode.decode_write` gives them (asyncua's
                    ``WriteParameters`` when that decoder leaves the request to asyncua)
HistoryUpdateRequest ``receiver.history_update(session, HistoryUpdateParameters)``
                    -> [HistoryUpdateResult]
CallRequest         ``receiver.call(session, CallParameters)`` -> [CallMethodResult]
                    (it hands the calls that are not its own to asyncua)
=================== =================================================================

Everything asyncua does before dispatching stays as it is and is done first, in the same
order: a request without a session is refused (BadUserAccessDenied), the permission
ruleset is asked (:class:`connectors.opcua_doors.RoleRules`), a session that is not
activated is refused (BadSessionNotActivated), the session's activity is touched. Every
other request type goes to asyncua unchanged.

The answer is sent from a task, not from the connection's message loop: while one Write
waits for its commit, the loop reads the next request of the same connection, so that
requests a writer sends without waiting for the answers (pipelined) are committed
together (group commit, :mod:`connectors.receive_store`). At most :data:`MAX_IN_FLIGHT`
requests of one connection wait for their answer; the next one waits for a slot (back
pressure on a writer that sends faster than the disk takes). Answers may thus leave in
another order than the requests came; OPC UA clients match them by request handle.

How it is plugged in: :class:`ReceiveBinaryServer` makes :class:`ReceiveProtocol`
connections, whose processor is a :class:`ReceiveProcessor`; :func:`start_server` is
asyncua's ``Server.start`` with that binary server (the only difference).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary

from connectors.receive_decode import decode_write

__all__ = [
    "MAX_IN_FLIGHT",
    "SERVICES",
    "ReceiveBinaryServer",
    "ReceiveProcessor",
    "ReceiveProtocol",
    "start_server",
]

logger = logging.getLogger(__name__)

#: Requests of one connection that may wait for their answer at once.
MAX_IN_FLIGHT = 16
#: Request type -> (parameters, receiver method, response) of the services taken over.
SERVICES = {
    ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary): (
        ua.WriteParameters,
        "write",
        ua.WriteResponse,
    ),
    ua.NodeId(ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary): (
        ua.HistoryUpdateParameters,
        "history_update",
        ua.HistoryUpdateResponse,
    ),
    ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary): (
        ua.CallParameters,
        "call",
        ua.CallResponse,
    ),
}


class ReceiveProcessor(UaProcessor):
    """asyncua's processor, with Write, HistoryUpdate and Call answered by the receiver."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._answers: set[asyncio.Task] = set()

    async def _process_message(self, typeid, requesthdr, seqhdr, body):
        service = SERVICES.get(typeid)
        receiver = getattr(self.iserver, "receiver", None)
        if service is None or receiver is None:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)
        # what asyncua checks before any service of a session, in its order
        if self.session is None:
            raise ua.uaerrors.BadUserAccessDenied
        rules = self._connection.security_policy.permissions
        if rules is not None and rules.check_validity(self.session.user, typeid, body) is False:
            raise ua.uaerrors.BadUserAccessDenied
        if not self.session.is_activated():
            raise ServiceError(ua.StatusCodes.BadSessionNotActivated)
        self.session_last_activity = time.monotonic()
        self.session.touch()
        params_type, method, response_type = service
        params = decode_write(body) if method == "write" else None  # the fast path
        if params is None:
            params = struct_from_binary(params_type, body)
        await self._slots.acquire()
        task = asyncio.create_task(
            self._answer(
                getattr(receiver, method), response_type, self.session, params, requesthdr, seqhdr
            )
        )
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)
        return True

    async def _answer(self, handler, response_type, session, params, requesthdr, seqhdr) -> None:
        try:
            response = response_type()
            response.Results = await handler(session, params)
        except (ServiceError, ua.uaerrors.UaStatusCodeError) as exc:
            response = _fault(exc.code)
        except Exception:
            logger.exception("receive: %s failed", response_type.__name__)
            response = _fault(ua.StatusCodes.BadInternalError)
        finally:
            self._slots.release()
        try:
            self.send_response(requesthdr.RequestHandle, seqhdr, response)
        except Exception as exc:  # the connection is gone: nobody to answer
            logger.info("receive: %s not sent (%r)", response_type.__name__, exc)


def _fault(code: int) -> ua.ServiceFault:
    response = ua.ServiceFault()
    response.ResponseHeader.ServiceResult = ua.StatusCode(code)
    return response


class ReceiveProtocol(OPCUAProtocol):
    """A connection whose processor is a :class:`ReceiveProcessor`."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.processor is not None:  # None: refused (max_connections)
            self.processor = ReceiveProcessor(self.iserver, self.transport, self.limits)
            self.processor.set_policies(self.policies)


class ReceiveBinaryServer(BinaryServer):
    """asyncua's binary server making :class:`ReceiveProtocol` connections."""

    def _make_protocol(self) -> OPCUAProtocol:
        return ReceiveProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
        )


async def start_server(server: Server) -> None:
    """asyncua's ``Server.start``, listening with a :class:`ReceiveBinaryServer`."""
    if server.iserver.certificate is not None:
        uacrypto.check_certificate(
            server.iserver.certificate, server._application_uri, socket.gethostname()
        )
    await server._setup_server_nodes()
    await server.iserver.start()
    try:
        host, port = server._get_bind_socket_info()
        server.bserver = ReceiveBinaryServer(server.iserver, host, port, server.limits)
        server.bserver.set_policies(server._policies)
        await server.bserver.start()
    except Exception:
        logger.exception("%s error starting server", server)
        await server.iserver.stop()
        raise
