from containerbatch.cli import main

main()
