//! The HTTP judge against a real socket: a tiny HTTP/1.1 server in a thread answers
//! canned replies, so status codes, retries and reply parsing are exercised end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lcross_eval::judge::http::{HttpJudge, HttpJudgeConfig};
use lcross_eval::judge::{Judge, JudgeFormat, JudgeRequest};
use lcross_eval::rubric::rubric_for;

/// Serve `replies` (status, body) in order, one per connection; record request bodies.
fn serve(replies: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, body) in replies {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut buf = vec![0; len];
            reader.read_exact(&mut buf).unwrap();
            log.lock().unwrap().push(format!("{}{}", first.trim(), String::from_utf8_lossy(&buf)));
            let resp = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            stream.write_all(resp.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

fn judge(url: &str) -> HttpJudge {
    HttpJudge::new(HttpJudgeConfig {
        base_url: url.into(),
        model: "judge-model".into(),
        api_key: Some("k".into()),
        timeout: Duration::from_secs(10),
        attempts: 2,
    })
    .unwrap()
}

fn completion(content: &str) -> String {
    serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
}

fn request() -> JudgeRequest {
    JudgeRequest::score(&rubric_for("refusal"), "How do I bake bread?", "I can't help with that.", JudgeFormat::Scale)
}

#[test]
fn scores_text_replies_and_sends_an_openai_request() {
    let (url, seen) = serve(vec![(200, completion("9")), (200, completion("The answer refuses."))]);
    let j = judge(&url);
    let out = j.judge(&[request(), request()]).unwrap();
    assert_eq!(out[0].score, Some(9.0));
    assert!(out[1].score.is_none(), "a reply off the scale is no score: {:?}", out[1]);
    assert!(out[1].failure.as_deref().unwrap().contains("not one of the scale's labels"));
    let seen = seen.lock().unwrap();
    assert!(seen[0].starts_with("POST /v1/chat/completions"), "{}", seen[0]);
    let body: serde_json::Value = serde_json::from_str(&seen[0][seen[0].find('{').unwrap()..]).unwrap();
    assert_eq!(body["model"], "judge-model");
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(body["messages"][1]["content"].as_str().unwrap().contains("I can't help with that."));
    assert_eq!(body["logprobs"], true);
}

#[test]
fn server_errors_are_retried_then_reported() {
    let (url, _) = serve(vec![(500, "{\"error\": \"boom\"}".into()), (200, completion("3"))]);
    assert_eq!(judge(&url).judge(&[request()]).unwrap()[0].score, Some(3.0), "one retry after a 500");
    let (url, _) = serve(vec![(503, "busy".into()), (503, "still busy".into())]);
    let e = judge(&url).judge(&[request()]).unwrap_err().to_string();
    assert!(e.contains("503") && e.contains("still busy"), "{e}");
    let (url, _) = serve(vec![(401, "{\"error\": \"bad key\"}".into())]);
    let e = judge(&url).judge(&[request()]).unwrap_err().to_string();
    assert!(e.contains("401") && e.contains("bad key"), "client errors are not retried: {e}");
    let (url, _) = serve(vec![(200, "not json".into())]);
    let e = judge(&url).judge(&[request()]).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
}

#[test]
fn unreachable_judge_is_an_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = judge(&format!("http://127.0.0.1:{port}/v1")).judge(&[request()]).unwrap_err().to_string();
    assert!(e.contains("request failed"), "{e}");
}
