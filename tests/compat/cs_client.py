"""Drives cloudsim with `cs`, a CloudStack client ferry did not write (PyPI: cs).

Proves that cloudsim's signature check and response shapes work for a real,
independent CloudStack client, not only for ferry's own: `cs` signs with
`apiKey`/`signatureVersion` in camel case, an `expires` of the `+0000` form, Python's
quoting, and polls async jobs itself. Run by ferry's test `cs_client_compat`.

Usage: python cs_client.py '<announcement JSON printed by ferry cloudsim>'
Prints one line per check and exits non-zero on the first failure.
"""

import json
import sys

import cs


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def main():
    sim = json.loads(sys.argv[1])
    oma = sim["appliances"]["oma"]
    for method in ("get", "post"):
        api = cs.CloudStack(
            endpoint=sim["endpoint"],
            key=sim["api_key"],
            secret=sim["secret_key"],
            method=method,
            fetch_result=True,
            poll_interval=0.02,
            timeout=10,
        )
        zones = api.listZones()["zone"]
        check(f"{method}: listZones", zones[0]["id"] == sim["zone_id"], zones)
        volumes = api.listVolumes(virtualmachineid=oma)["volume"]
        check(f"{method}: listVolumes on the appliance", len(volumes) == 3, volumes)
        check(
            f"{method}: appliance device ids",
            sorted(v["deviceid"] for v in volumes) == [0, 1, 2],
            volumes,
        )
        templates = api.listTemplates(templatefilter="executable")["template"]
        offerings = api.listServiceOfferings()["serviceoffering"]
        custom = next(o for o in offerings if o["iscustomized"])
        networks = api.listNetworks(zoneid=sim["zone_id"])["network"]
        test_net = next(n for n in networks if n["name"] == "test")
        # Spaces, '*', ':' and '[' ']' exercise the Java URLEncoder semantics.
        # ('~' is left out: Python's quote keeps it bare, Java encodes it, so `cs`
        # itself cannot sign a value with '~' for a real CloudStack either.)
        vm = api.deployVirtualMachine(
            zoneid=sim["zone_id"],
            serviceofferingid=custom["id"],
            templateid=templates[0]["id"],
            name=f"compat-{method}",
            displayname=f"compat drill * {method}: [1]",
            startvm=False,
            details={"cpuNumber": 2, "cpuSpeed": 1000, "memory": 2048},
            iptonetworklist=[{"networkid": test_net["id"], "mac": f"02:00:00:00:00:0{len(method)}"}],
        )["virtualmachine"]
        check(f"{method}: deploy stopped", vm["state"] == "Stopped", vm)
        check(f"{method}: custom cpu", vm["cpunumber"] == 2 and vm["memory"] == 2048, vm)
        check(f"{method}: display name round-trips", vm["displayname"] == f"compat drill * {method}: [1]", vm)
        created = api.createVolume(
            name=f"compat-data-{method}", zoneid=sim["zone_id"],
            diskofferingid=api.listDiskOfferings()["diskoffering"][0]["id"], size=5,
        )["volume"]
        attached = api.attachVolume(id=created["id"], virtualmachineid=vm["id"])["volume"]
        check(f"{method}: attach auto device id", attached["deviceid"] == 1, attached)
        try:
            api.attachVolume(id=created["id"], virtualmachineid=vm["id"])
            check(f"{method}: second attach refused", False, "no error")
        except cs.CloudStackApiException as e:
            check(
                f"{method}: second attach refused in the job",
                e.error["errortext"] == "Please specify a volume that is not attached to any VM.",
                e.error,
            )
        api.detachVolume(id=created["id"])
        api.destroyVirtualMachine(id=vm["id"], expunge=True)

    bad = cs.CloudStack(endpoint=sim["endpoint"], key=sim["api_key"], secret="wrong", timeout=10)
    try:
        bad.listZones()
        check("wrong secret refused", False, "no error")
    except cs.CloudStackApiException as e:
        check("wrong secret refused with 401", e.error["errorcode"] == 401, e.error)


if __name__ == "__main__":
    main()
