//! The Maildir++ mapping of a server's folder name: whatever the name, the
//! result is a single safe path component, a direct child of the Maildir.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use sshmail::deliver::maildir::Subfolder;

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    match Subfolder::for_folder(&name) {
        Ok(None) => assert!(name.eq_ignore_ascii_case("INBOX")),
        Ok(Some(sub)) => {
            let s = sub.as_str();
            let root = Path::new("/home/u/Maildir");
            let joined = root.join(s);
            assert_eq!(joined.parent(), Some(root), "{name:?} -> {s:?} is not a direct child");
            let parts: Vec<_> = Path::new(s).components().collect();
            assert!(matches!(parts.as_slice(), [Component::Normal(_)]), "{name:?} -> {s:?}");
            assert!(s.starts_with('.') && s != "." && s != "..", "{s:?}");
            assert!(!s.chars().any(char::is_control), "{s:?}");
            assert!(Subfolder::checked(s).is_some());
        }
        Err(_) => {}
    }
});
