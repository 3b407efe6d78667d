"""CA certificates for X.509 devices: ``/certificates/{name}``, in the shape of IoT Hub's
certificate resources.

Registering a CA here is what IoT Hub's upload plus proof-of-possession does: a caller with
registryReadWrite is trusted to own the CA, and devices whose certificates chain to it log in
as the device their subject CN names. ``isVerified`` is therefore always true."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from hub.api.deps import RegistryReader, RegistryWriter, ServicesDep
from hub.api.schemas import ERROR_RESPONSES, CertificateIn, CertificateListOut, CertificateOut
from hub.domain.certificates import CaCertificate
from hub.domain.twin import isoformat

router = APIRouter(tags=["certificates"], responses=ERROR_RESPONSES)

IfMatch = Annotated[str | None, Header()]
_TYPE = "Microsoft.Devices/IotHubs/Certificates"


def certificate_document(certificate: CaCertificate, hostname: str) -> dict[str, Any]:
    cert = certificate.certificate
    return {
        "properties": {
            "subject": cert.subject.rfc4514_string(),
            "expiry": format_datetime(cert.not_valid_after_utc, usegmt=True),
            "thumbprint": certificate.thumbprint,
            "isVerified": True,
            "created": isoformat(certificate.created_time),
            "updated": isoformat(certificate.updated_time),
            "certificate": certificate.pem,
        },
        "id": f"/IotHubs/{hostname}/certificates/{certificate.name}",
        "name": certificate.name,
        "etag": certificate.etag,
        "type": _TYPE,
    }


@router.put("/certificates/{name}", response_model=CertificateOut)
async def put_certificate(
    name: str,
    body: CertificateIn,
    services: ServicesDep,
    _: RegistryWriter,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Register a CA certificate (PEM or base64 DER); with ``If-Match``, replace one. Devices
    the replaced CA admitted are disconnected and must log in again."""
    certificate = await services.certificates.put(name, body.properties.certificate, if_match)
    response.headers["ETag"] = f'"{certificate.etag}"'
    return certificate_document(certificate, services.hostname)


@router.get("/certificates/{name}", response_model=CertificateOut)
async def get_certificate(name: str, services: ServicesDep, _: RegistryReader) -> dict[str, Any]:
    return certificate_document(await services.certificates.get(name), services.hostname)


@router.get("/certificates", response_model=CertificateListOut)
async def list_certificates(services: ServicesDep, _: RegistryReader) -> dict[str, Any]:
    return {"value": [certificate_document(c, services.hostname) for c in await services.certificates.list_all()]}


@router.delete("/certificates/{name}", status_code=204)
async def delete_certificate(name: str, services: ServicesDep, _: RegistryWriter, if_match: IfMatch = None) -> Response:
    """Remove a CA; the devices it admitted are disconnected at once."""
    await services.certificates.delete(name, if_match)
    return Response(status_code=204)


__all__ = ["certificate_document", "router"]
