from relaymesh.cli.main import main

main()
