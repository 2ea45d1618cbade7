//! XML-RPC bodies through the `dxr` codec: the `methodCall` document for a call, and a
//! `methodResponse` read back into a value or a typed [`Fault`]. Pure; tested on
//! bodies captured from supervisord.

use dxr::{FaultResponse, MethodCall, MethodResponse, TryFromValue, Value};

use super::{Error, Fault};

/// The `methodCall` document for `method(params)`.
pub(super) fn encode_call(method: &str, params: Vec<Value>) -> Result<String, Error> {
    let call = MethodCall {
        name: method.into(),
        params,
    };
    call.to_xml()
        .map_err(|e| Error::Transport(format!("cannot encode the call to {method}: {e}")))
}

/// The value of a `methodResponse`, or its fault as [`Error::Fault`].
pub(super) fn decode_response(body: &[u8]) -> Result<Value, Error> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::BadResponse("the answer is not UTF-8".into()))?;
    if let Ok(response) = MethodResponse::from_xml(text) {
        return Ok(response.value);
    }
    match FaultResponse::from_xml(text) {
        Ok(FaultResponse { fault }) => Err(Error::Fault {
            fault: Fault::from_code(fault.code()),
            string: fault.string().to_string(),
        }),
        // dxr's own error quotes the whole body; a short excerpt says enough.
        Err(_) => Err(Error::BadResponse(format!(
            "not an XML-RPC methodResponse: {:?}",
            excerpt(text, 80)
        ))),
    }
}

/// `value` as the Rust type `method`'s answer should have.
pub(super) fn typed<T: TryFromValue>(method: &str, value: &Value) -> Result<T, Error> {
    T::try_from_value(value).map_err(|e| Error::BadResponse(format!("{method} answered {e}")))
}

/// The first `max` characters of `text`.
fn excerpt(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::super::ProcessInfo;
    use super::*;

    /// Captured from supervisord 4.3.0: getProcessInfo of a program that exited 3
    /// (`startsecs=0`, `exitcodes=0`).
    const INFO_EXITED: &str = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>\n<member>\n<name>name</name>\n<value><string>crash</string></value>\n</member>\n<member>\n<name>group</name>\n<value><string>crash</string></value>\n</member>\n<member>\n<name>start</name>\n<value><int>1795705433</int></value>\n</member>\n<member>\n<name>stop</name>\n<value><int>1795705433</int></value>\n</member>\n<member>\n<name>now</name>\n<value><int>1795705436</int></value>\n</member>\n<member>\n<name>state</name>\n<value><int>100</int></value>\n</member>\n<member>\n<name>statename</name>\n<value><string>EXITED</string></value>\n</member>\n<member>\n<name>spawnerr</name>\n<value><string>Bad exit code 3</string></value>\n</member>\n<member>\n<name>exitstatus</name>\n<value><int>3</int></value>\n</member>\n<member>\n<name>logfile</name>\n<value><string>/tmp/svcap/crash.out</string></value>\n</member>\n<member>\n<name>stdout_logfile</name>\n<value><string>/tmp/svcap/crash.out</string></value>\n</member>\n<member>\n<name>stderr_logfile</name>\n<value><string>/tmp/svcap/crash.err</string></value>\n</member>\n<member>\n<name>pid</name>\n<value><int>0</int></value>\n</member>\n<member>\n<name>description</name>\n<value><string>Nov 26 03:03 PM</string></value>\n</member>\n</struct></value>\n</param>\n</params>\n</methodResponse>\n";

    /// Captured: an unknown process name.
    const FAULT_BAD_NAME_BODY: &str = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>10</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>BAD_NAME: nope</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n";

    /// Captured: readProcessStdoutLog of a `redirect_stderr=true` program.
    const LOG_SNOWMAN: &str = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><string>quick death \u{2603} snowman\n</string></value>\n</param>\n</params>\n</methodResponse>\n";

    fn string(body: &str) -> String {
        typed("test", &decode_response(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn process_info_is_read_from_a_real_answer() {
        let value = decode_response(INFO_EXITED.as_bytes()).unwrap();
        let info: ProcessInfo = typed("supervisor.getProcessInfo", &value).unwrap();
        assert_eq!(
            info,
            ProcessInfo {
                name: "crash".into(),
                group: "crash".into(),
                start: 1795705433,
                stop: 1795705433,
                now: 1795705436,
                state: 100,
                statename: "EXITED".into(),
                spawnerr: "Bad exit code 3".into(),
                exitstatus: 3,
                pid: 0,
                description: "Nov 26 03:03 PM".into(),
                stdout_logfile: "/tmp/svcap/crash.out".into(),
                stderr_logfile: "/tmp/svcap/crash.err".into(),
            }
        );
        assert_eq!(info.state(), Some(crate::supervisord::event::State::Exited));
    }

    #[test]
    fn a_fault_becomes_a_typed_error() {
        match decode_response(FAULT_BAD_NAME_BODY.as_bytes()) {
            Err(Error::Fault { fault, string }) => {
                assert_eq!(fault, Fault::BadName);
                assert_eq!(string, "BAD_NAME: nope");
            }
            other => panic!("expected a fault, got {other:?}"),
        }
    }

    #[test]
    fn log_text_keeps_multibyte_characters_and_newlines() {
        assert_eq!(string(LOG_SNOWMAN), "quick death ☃ snowman\n");
    }

    #[test]
    fn log_text_keeps_its_surrounding_whitespace() {
        // A window may start with an indented line or be a lone newline.
        let body = |s: &str| {
            format!("<methodResponse><params><param><value><string>{s}</string></value></param></params></methodResponse>")
        };
        assert_eq!(string(&body("  at main.rs:3\n\n")), "  at main.rs:3\n\n");
        assert_eq!(string(&body("\n")), "\n");
    }

    #[test]
    fn escaped_log_text_is_unescaped() {
        // Python's xmlrpc escapes &, < and >; character references are legal too.
        let body = "<?xml version='1.0'?><methodResponse><params><param><value><string>a &lt;b&gt; &amp;&amp; c&#33; &#x263A;</string></value></param></params></methodResponse>";
        assert_eq!(string(body), "a <b> && c! ☺");
    }

    #[test]
    fn an_untyped_value_is_a_string_and_an_empty_string_is_empty() {
        let untyped =
            "<methodResponse><params><param><value>plain</value></param></params></methodResponse>";
        assert_eq!(string(untyped), "plain");
        let empty = "<methodResponse><params><param><value><string></string></value></param></params></methodResponse>";
        assert_eq!(string(empty), "");
    }

    #[test]
    fn a_log_tail_answer_is_a_typed_triple() {
        let body = "<methodResponse><params><param><value><array><data><value><string>x</string></value><value><int>7</int></value><value><boolean>1</boolean></value></data></array></value></param></params></methodResponse>";
        let value = decode_response(body.as_bytes()).unwrap();
        let tail: (String, i32, bool) = typed("tail", &value).unwrap();
        assert_eq!(tail, ("x".to_string(), 7, true));
    }

    #[test]
    fn broken_answers_are_bad_responses_not_panics() {
        for body in [
            "",
            "<html>500</html>",
            "<methodResponse><params>",
            "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
        ] {
            assert!(
                matches!(decode_response(body.as_bytes()), Err(Error::BadResponse(_))),
                "{body:?}"
            );
        }
        assert!(matches!(
            decode_response(b"\xff\xfe"),
            Err(Error::BadResponse(_))
        ));
        // a well-formed answer of the wrong type is a bad response too
        let value = decode_response(LOG_SNOWMAN.as_bytes()).unwrap();
        let wrong = typed::<ProcessInfo>("supervisor.getProcessInfo", &value);
        assert!(matches!(wrong, Err(Error::BadResponse(_))), "{wrong:?}");
    }

    #[test]
    fn the_call_escapes_its_string_parameters() {
        let xml = encode_call(
            "supervisor.readProcessStderrLog",
            vec![
                Value::String("g:<a&b>".into()),
                Value::Integer(-8000),
                Value::Integer(0),
            ],
        )
        .unwrap();
        assert!(xml.contains("<methodName>supervisor.readProcessStderrLog</methodName>"));
        assert!(xml.contains("<string>g:&lt;a&amp;b&gt;</string>"));
        assert!(xml.contains("<i4>-8000</i4>"));
        // and it is a well-formed call that reads back to the same thing
        let back = MethodCall::from_xml(&xml).unwrap();
        assert_eq!(back.name, "supervisor.readProcessStderrLog");
        assert_eq!(back.params[0], Value::String("g:<a&b>".into()));
    }
}
