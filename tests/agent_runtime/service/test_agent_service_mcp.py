"""MCP tools through the agent service for real: `python -m agent_runtime serve` as a process with the README's
operator file (`--mcp-servers-file`), a real model worker process (`tiny`) and the README's MCP example run against
it: a session naming a server gets its tools with their schemas, and a turn that is made to call one (first_tool_choice:
constrained decoding, never faked) gets the server's answer. Approval rules reach MCP tools; an unknown server is
INVALID_ARGUMENT and one that cannot be started UNAVAILABLE."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import pytest
from realparts import ROOT, Process, child_env

from foundation.clients.agent import AgentClient, ApprovalRequested, ToolFinished
from foundation.clients.worker import Sampling
from foundation.clients.worker.errors import InvalidArgument, Unavailable


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### MCP tools"):]
    return section[:section.index("\n## ")]


@pytest.fixture(scope="module")
def agent(model_worker, tmp_path_factory):
    root = tmp_path_factory.mktemp("agent-mcp")
    config = json.loads(re.search(r"```json\n(.*?)```", readme_section(), re.S).group(1)
                        .replace(".venv/bin/python", sys.executable))
    config["*"]["broken"] = {"command": [str(root / "no-such-server")]}
    (root / "mcp.json").write_text(json.dumps(config))
    process = Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--worker", model_worker[0],
                       "--database", f"sqlite:///{root}/agent.db", "--mcp-servers-file", str(root / "mcp.json"),
                       "--require-approval", "demo__fail"], child_env(), root / "agent.log")
    process.target = "127.0.0.1:" + process.wait_for(r"agent service on 127\.0\.0\.1:(\d+)").group(1)
    yield process
    process.stop()


def test_the_readme_example_calls_an_mcp_tool_through_a_turn(agent):
    code = "\n".join(re.findall(r"```python\n(.*?)```", readme_section(), re.S))
    assert "127.0.0.1:50071" in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace("127.0.0.1:50071", agent.target), {})
    output = printed.getvalue()
    assert "'demo__add', 'demo__weather', 'demo__slow'" in output
    assert re.search(r"ToolFinished\(call_id='[^']+', name='demo__weather', content='\{\"result\": "
                     r"\"(Lima|Paris|Tokyo): 18 °C, clear\"\}', is_error=False, status='finished'\)", output), output
    with AgentClient(agent.target) as client:
        session = client.get_session("mcp-demo")
        assert session.mcp_servers == ["demo"]
        weather = next(tool for tool in session.tools if tool.name == "demo__weather")
        assert weather.description == "Today's weather in a city."
        assert weather.parameters["properties"]["city"]["enum"] == ["Lima", "Paris", "Tokyo"]
        assert "calculator" in {tool.name for tool in session.tools}  # the service's own tools, as without MCP
        entries = client.transcript("mcp-demo").entries
        call = next(e for e in entries if e.kind == "tool_call")
        result = next(e for e in entries if e.kind == "tool_result")
        assert (call.tool_name, json.loads(result.content)) == ("demo__weather",
                                                                 {"result": f"{call.arguments['city']}: 18 °C, clear"})


def test_mcp_tools_wait_for_approval_and_bad_servers_are_refused(agent):
    with AgentClient(agent.target) as client:
        client.create_session("mcp-approve", tools=[], mcp_servers=["demo"])
        # demo__fail needs approval (the service's setting); the turn waits, and is cancelled here.
        stream = client.run_turn("mcp-approve", "fail", mode="non-think", first_tool_choice="demo__fail",
                                 max_steps=1, sampling=Sampling(temperature=0.0, max_tokens=48))
        asked = next(event for event in stream if isinstance(event, (ApprovalRequested, ToolFinished)))
        stream.close()
        assert isinstance(asked, ApprovalRequested) and asked.name == "demo__fail"
        client.cancel(stream.turn_id)
        with pytest.raises(InvalidArgument, match="no MCP server 'nope' for this tenant; configured: broken, demo"):
            client.create_session(mcp_servers=["nope"])
        with pytest.raises(Unavailable, match="MCP server 'broken' could not be started or reached"):
            client.create_session(mcp_servers=["broken"])
